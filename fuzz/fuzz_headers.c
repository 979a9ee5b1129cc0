/* fuzz_headers - an answer as libcurl hands it over: header lines through the session's own header callback,
 * the body through its write callback (in chunks, against max_response_size), then the same steps as
 * xfer_result: the rate-limit fields merged into the session, lc_finish, and session:last() / :rate_limit().
 *
 * on_header and on_write are static in csrc/http.c, so this file includes http.c itself (the build leaves
 * http.c out of the harness's other sources). It depends on http.c's internal names (lc_xfer, its fields, the
 * callbacks): a change there that breaks this build is a reminder to keep the harness in step.
 *
 * Input: [op][max_size selector][chunk size] then header lines, each ending in \n, up to a blank line; more
 * header blocks follow while the next line starts with "HTTP/" (1xx answers); the rest is the body.
 * Invariants: retry_after absent or finite and >= 0; rate-limit values finite; trace id short, NUL-terminated, no
 * control characters; the body never past max_size; whatever the answer, a result or an error object, never a
 * raise; session:last() and :rate_limit() give only finite numbers; the session's token ("fuzz-token", also in
 * fuzz/headers.dict) is in no error, whatever the answer echoes. */
#include "../csrc/http.c"

#include <math.h>

#include "common.h"

static const size_t MAX_SIZES[] = {4u * 1024 * 1024, 1, 16, 64, 1024, 4096, 100000};
#define NMAX (sizeof MAX_SIZES / sizeof *MAX_SIZES)

static const char CHECK[] =
    "local KINDS = { network=1, timeout=1, auth=1, not_found=1, rate_limited=1, http=1, server=1, decode=1 }\n"
    "local function finite(x) return type(x) == 'number' and x == x and x > -math.huge and x < math.huge end\n"
    "local function leaks(v, seen)\n"
    "  if type(v) == 'string' then return v:find('fuzz-token', 1, true) ~= nil end\n"
    "  if type(v) ~= 'table' then return false end\n"
    "  seen = seen or {}\n"
    "  if seen[v] then return false end\n"
    "  seen[v] = true\n"
    "  for k, x in pairs(v) do if leaks(k, seen) or leaks(x, seen) then return true end end\n"
    "  return false\n"
    "end\n"
    "return function(session, ok, v, err)\n"
    "  if v == nil then\n"
    "    assert(not leaks(err) and not tostring(err):find('fuzz-token', 1, true), 'the token is in the error')\n"
    "    assert(core.is_error(err) and KINDS[err.kind], 'no error object of a known kind')\n"
    "    if err.retry_after ~= nil then assert(finite(err.retry_after) and err.retry_after >= 0, 'bad err.retry_after') end\n"
    "    local s = tostring(err)\n"
    "    assert(#s <= 1024 and not s:find('%c'), 'tostring(err) not one short line')\n"
    "  else\n"
    "    assert(err == nil)\n"
    "    if core.typeof(v) then local _ = tostring(v), v:to_table() end\n"
    "  end\n"
    "  local remaining, interval, ra = session:last()\n"
    "  if remaining ~= nil then assert(finite(remaining), 'last(): remaining not finite') end\n"
    "  if interval ~= nil then assert(finite(interval), 'last(): interval not finite') end\n"
    "  if ra ~= nil then assert(finite(ra) and ra >= 0, 'last(): retry_after not finite and >= 0') end\n"
    "  for k, x in pairs(session:rate_limit()) do assert(finite(x), 'rate_limit().' .. k .. ' not finite') end\n"
    "end\n";

static lc_session *sess;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  lua_State *L;
  (void)argc;
  (void)argv;
  L = fz_L = fz_setup(CHECK);
  /* One real session (never used for a transfer), anchored in the registry. */
  lua_getglobal(L, "core");
  lua_getfield(L, -1, "session");
  lua_createtable(L, 0, 4);
  lua_pushliteral(L, "http://127.0.0.1:9");
  lua_setfield(L, -2, "base_url");
  lua_pushliteral(L, "fuzz-token");
  lua_setfield(L, -2, "token");
  lua_pushliteral(L, "2021-04-15");
  lua_setfield(L, -2, "version");
  lua_pushliteral(L, "fuzz");
  lua_setfield(L, -2, "user_agent");
  fz_call(L, 1, 2);
  if (lua_isnil(L, -2)) fz_fail("core.session", luaL_tolstring(L, -1, NULL));
  lua_pop(L, 1);
  sess = (lc_session *)lua_touserdata(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, "fz_session");
  lua_pop(L, 1);
  return 0;
}

/* Next line of in (up to and including \n, or the rest); returns its length, 0 at the end. */
static size_t next_line(fz_in *in, const char **line) {
  size_t start = in->i;
  const uint8_t *nl;
  if (in->i >= in->n) return 0;
  nl = memchr(in->p + start, '\n', in->n - start);
  in->i = nl ? (size_t)(nl - in->p) + 1 : in->n;
  *line = (const char *)in->p + start;
  return in->i - start;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_State *L = fz_L;
  lc_session *s = sess;
  lc_xfer *x = &s->main;
  fz_in in = {data, size, 0};
  unsigned op = fz_u8(&in) % LC_OP__COUNT;
  size_t chunk, len;
  long status = 200;
  const char *line;
  char buf[8192];
  int nres;
  lc_answer a;

  s->max_size = MAX_SIZES[fz_u8(&in) % NMAX];
  chunk = fz_u8(&in) + 1;
  xfer_begin(x, (enum lc_op)op); /* what every call starts with (the 64 KiB cap counts this input's lines only) */
  s->rl_last.seen = 0;

  /* headers: libcurl hands over one whole line at a time, in a buffer it owns (copied here, so ASan sees its end) */
  for (;;) {
    len = next_line(&in, &line);
    if (len == 0) break;
    if (len > sizeof buf) len = sizeof buf;
    memcpy(buf, line, len);
    if (len >= 5 && memcmp(buf, "HTTP/", 5) == 0) {
      const char *sp = memchr(buf, ' ', len);
      status = 0;
      if (sp) {
        size_t k;
        for (k = (size_t)(sp - buf) + 1; k < len && buf[k] >= '0' && buf[k] <= '9' && status < 1000; k++)
          status = status * 10 + (buf[k] - '0');
      }
    }
    if (on_header(buf, 1, len, x) != len) {
      /* it refuses a line past the header cap, or one that makes the head untrusted (a malformed status line, a
       * Content-Length that is no plain number), saying which; libcurl then aborts the transfer */
      if (!x->head_too_big && !x->bad_head) fz_fail("on_header refused a line without saying why", NULL);
      break;
    }
    if ((len == 2 && buf[0] == '\r') || len == 1) {
      if (!(fz_left(&in) >= 5 && memcmp(in.p + in.i, "HTTP/", 5) == 0)) break;
    }
  }
  if (!(x->retry_after == -1 || (isfinite(x->retry_after) && x->retry_after >= 0)))
    fz_fail("retry_after not -1 and not a finite number >= 0", NULL);
  {
    int i;
    for (i = 0; i < 5; i++)
      if ((x->rl_now.seen & (1u << i)) && !isfinite((&x->rl_now.max)[i])) fz_fail("rate-limit value not finite", NULL);
  }
  if (memchr(x->trace_id, '\0', sizeof x->trace_id) == NULL) fz_fail("trace id not NUL-terminated", NULL);
  {
    size_t k;
    for (k = 0; x->trace_id[k]; k++)
      if ((unsigned char)x->trace_id[k] < 0x20 || x->trace_id[k] == 0x7f) fz_fail("control character in trace id", NULL);
  }

  /* body, in chunks, as libcurl's write callback gets it */
  while (fz_left(&in) > 0 && !x->too_big) {
    size_t n = fz_left(&in) < chunk ? fz_left(&in) : chunk, got;
    memcpy(buf, in.p + in.i, n);
    got = on_write(buf, 1, n, x);
    in.i += n;
    if (got != n && !x->too_big) fz_fail("on_write refused without too_big", NULL);
    if (x->body_len > s->max_size) fz_fail("body past max_response_size", NULL);
  }

  /* what xfer_result does after a transfer (its libcurl queries replaced by what the input said) */
  if (x->rl_now.seen) {
    int i;
    for (i = 0; i < 5; i++)
      if (x->rl_now.seen & (1u << i)) (&s->rl_last.max)[i] = (&x->rl_now.max)[i];
    s->rl_last.seen |= x->rl_now.seen;
  }
  fz_push_check(L);
  lua_getfield(L, LUA_REGISTRYINDEX, "fz_session");
  lua_pushboolean(L, !x->too_big);
  memset(&a, 0, sizeof a);
  a.secret = s->auth + AUTH_PREFIX_LEN; /* as xfer_result does */
  a.secret_len = strlen(a.secret);
  a.status = status;
  a.retry_after = x->retry_after;
  a.trace_id = x->trace_id;
  a.content_type = x->content_type;
  a.content_type_len = x->content_type_len;
  a.body = x->body ? x->body : "";
  a.body_len = x->body_len;
  if (x->too_big && status < 300) {
    lua_pushnil(L);
    lc_push_error(L, "decode", "answer is larger than max_response_size (%lu bytes)", (unsigned long)s->max_size);
    nres = 2;
  } else {
    nres = lc_finish(L, (enum lc_op)op, &a);
  }
  if (nres == 1) lua_pushnil(L);
  fz_call(L, 4, 0);
  fz_end(L);
  return 0;
}
