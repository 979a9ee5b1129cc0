/* http.c - leadconnector.Session: one libcurl easy handle per client, kept alive and reused across calls.
 *
 * Callbacks here never call into Lua (a Lua error must never unwind through libcurl): the body, the headers we
 * care about and the upload state all live in the session struct, which the userdata owns; close() and __gc free
 * it through one idempotent cleanup. The token exists only inside the Authorization header line, which is wiped
 * before it is freed, and is never copied into a message, an error or a tostring.
 *
 * Sends (POST) upload their body through a read callback with no seek callback. That is deliberate: libcurl
 * silently re-sends a request when a reused connection turns out dead with no answer, which for a non-idempotent
 * send could deliver a message twice. Without a way to rewind the body it fails instead (CURLE_SEND_FAIL_REWIND),
 * and the caller gets a network error marked request_sent = true. Reads and status updates (idempotent) use
 * POSTFIELDS and keep libcurl's transparent retry. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "lc.h"

typedef struct lc_session {
  CURL *easy;
  struct curl_slist *hdr_get, *hdr_body; /* default Version */
  struct curl_slist *hdr_tmp;            /* a call's own Version; freed after each call */
  char *auth;                            /* "Authorization: Bearer ..." (wiped on free) */
  char *version;                         /* default Version value */
  char *base;
  size_t base_len;
  char *url; /* scratch for base + path */
  size_t url_cap;
  /* answer */
  char *body;
  size_t body_len, body_cap, max_size;
  int too_big;
  lc_ratelimit rl_now, rl_last;
  double retry_after;
  char trace_id[96];
  /* upload */
  const char *up;
  size_t up_len, up_pos;
  long timeout_ms;
  int busy;
  char errbuf[CURL_ERROR_SIZE];
} lc_session;

/* --- small helpers ------------------------------------------------------------------------------------------- */

static void wipe(void *p, size_t n) {
  volatile unsigned char *v = (volatile unsigned char *)p;
  while (n--) *v++ = 0;
}

static void free_slist_wiped(struct curl_slist *l) {
  struct curl_slist *i;
  for (i = l; i != NULL; i = i->next)
    if (i->data) wipe(i->data, strlen(i->data));
  curl_slist_free_all(l);
}

static int build_headers(lc_session *s, const char *version, struct curl_slist **get, struct curl_slist **body) {
  char vline[128];
  struct curl_slist *g = NULL, *b = NULL, *t;
  snprintf(vline, sizeof vline, "Version: %s", version);
#define ADD(list, str)                                                                                                 \
  do {                                                                                                                 \
    t = curl_slist_append(list, str);                                                                                  \
    if (t == NULL) goto oom;                                                                                           \
    list = t;                                                                                                          \
  } while (0)
  ADD(g, s->auth);
  ADD(g, vline);
  ADD(g, "Accept: application/json");
  ADD(b, s->auth);
  ADD(b, vline);
  ADD(b, "Accept: application/json");
  ADD(b, "Content-Type: application/json");
  ADD(b, "Expect:"); /* no 100-continue round trip */
#undef ADD
  *get = g;
  *body = b;
  return 1;
oom:
  free_slist_wiped(g);
  free_slist_wiped(b);
  return 0;
}

static void session_cleanup(lc_session *s) {
  if (s->easy) curl_easy_cleanup(s->easy);
  s->easy = NULL;
  free_slist_wiped(s->hdr_get);
  free_slist_wiped(s->hdr_body);
  free_slist_wiped(s->hdr_tmp);
  s->hdr_get = s->hdr_body = s->hdr_tmp = NULL;
  if (s->auth) {
    wipe(s->auth, strlen(s->auth));
    free(s->auth);
    s->auth = NULL;
  }
  free(s->version);
  free(s->base);
  free(s->url);
  free(s->body);
  s->version = s->base = s->url = s->body = NULL;
  s->body_len = s->body_cap = s->url_cap = 0;
}

/* --- libcurl callbacks (pure C) --------------------------------------------------------------------------------- */

static size_t on_write(char *data, size_t size, size_t nmemb, void *ud) {
  lc_session *s = (lc_session *)ud;
  size_t n = size * nmemb;
  if (n > s->max_size - s->body_len || s->body_len > s->max_size) {
    s->too_big = 1;
    return 0; /* aborts the transfer: CURLE_WRITE_ERROR */
  }
  if (s->body_cap - s->body_len < n) {
    size_t cap = s->body_cap ? s->body_cap : 4096;
    char *p;
    while (cap - s->body_len < n) cap *= 2;
    if (cap > s->max_size) cap = s->max_size;
    p = (char *)realloc(s->body, cap);
    if (p == NULL) return 0;
    s->body = p;
    s->body_cap = cap;
  }
  memcpy(s->body + s->body_len, data, n);
  s->body_len += n;
  return n;
}

static size_t on_read(char *dest, size_t size, size_t nmemb, void *ud) {
  lc_session *s = (lc_session *)ud;
  size_t n = size * nmemb, left = s->up_len - s->up_pos;
  if (n > left) n = left;
  memcpy(dest, s->up + s->up_pos, n);
  s->up_pos += n;
  return n;
}

static int name_is(const char *line, size_t len, const char *name, const char **value, size_t *vlen) {
  size_t n = strlen(name);
  const char *v, *end = line + len;
  if (len <= n || line[n] != ':' || strncasecmp(line, name, n) != 0) return 0;
  v = line + n + 1;
  while (v < end && (*v == ' ' || *v == '\t')) v++;
  while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t')) end--;
  *value = v;
  *vlen = (size_t)(end - v);
  return 1;
}

static int parse_number(const char *v, size_t n, double *out) {
  char tmp[40];
  char *endp;
  if (n == 0 || n >= sizeof tmp) return 0;
  memcpy(tmp, v, n);
  tmp[n] = '\0';
  *out = strtod(tmp, &endp);
  return *endp == '\0' && *out == *out;
}

static size_t on_header(char *line, size_t size, size_t nmemb, void *ud) {
  static const char *const rl_names[] = {"X-RateLimit-Max", "X-RateLimit-Remaining",
                                         "X-RateLimit-Interval-Milliseconds", "X-RateLimit-Limit-Daily",
                                         "X-RateLimit-Daily-Remaining"};
  lc_session *s = (lc_session *)ud;
  size_t len = size * nmemb, vlen;
  const char *v;
  int i;
  if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) { /* a new answer (after a 1xx, say): start over */
    s->rl_now.seen = 0;
    s->retry_after = -1;
    s->trace_id[0] = '\0';
    return len;
  }
  if (len < 12 || (line[0] != 'x' && line[0] != 'X' && line[0] != 'r' && line[0] != 'R')) return len;
  for (i = 0; i < 5; i++) {
    double d;
    if (name_is(line, len, rl_names[i], &v, &vlen)) {
      if (parse_number(v, vlen, &d)) {
        (&s->rl_now.max)[i] = d;
        s->rl_now.seen |= 1u << i;
      }
      return len;
    }
  }
  if (name_is(line, len, "Retry-After", &v, &vlen)) {
    double d;
    if (parse_number(v, vlen, &d) && d >= 0) {
      s->retry_after = d;
    } else if (vlen > 0 && vlen < 64) { /* an HTTP date */
      char tmp[64];
      time_t when;
      memcpy(tmp, v, vlen);
      tmp[vlen] = '\0';
      when = curl_getdate(tmp, NULL);
      if (when != (time_t)-1) {
        double left = difftime(when, time(NULL));
        s->retry_after = left > 0 ? left : 0;
      }
    }
    return len;
  }
  if (name_is(line, len, "X-Trace-Id", &v, &vlen) || name_is(line, len, "X-Request-Id", &v, &vlen)) {
    size_t i2;
    if (vlen >= sizeof s->trace_id) vlen = sizeof s->trace_id - 1;
    for (i2 = 0; i2 < vlen; i2++) s->trace_id[i2] = (v[i2] < 0x20 || v[i2] == 0x7f) ? '?' : v[i2];
    s->trace_id[vlen] = '\0';
  }
  return len;
}

/* --- Lua side --------------------------------------------------------------------------------------------------- */

static lc_session *check_session(lua_State *L) {
  lc_session *s = (lc_session *)luaL_checkudata(L, 1, LC_SESSION_MT);
  if (s->easy == NULL) luaL_error(L, "leadconnector: the client is closed");
  return s;
}

static double opt_seconds(lua_State *L, int t, const char *k, double dflt) {
  double v;
  lua_getfield(L, t, k);
  v = lua_isnil(L, -1) ? dflt : (double)lua_tonumber(L, -1);
  lua_pop(L, 1);
  return v;
}

static const char *opt_string(lua_State *L, int t, const char *k) {
  const char *v;
  lua_getfield(L, t, k);
  v = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
  lua_pop(L, 1); /* the string stays referenced by the options table */
  return v;
}

static char *dupstr(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = (char *)malloc(n);
  if (p) memcpy(p, s, n);
  return p;
}

#define SETOPT(opt, val)                                                                                               \
  do {                                                                                                                 \
    if (curl_easy_setopt(s->easy, opt, val) != CURLE_OK) goto setopt_failed;                                           \
  } while (0)

/** core.session(opts) -> Session | nil, err
 * opts: base_url, token, version, user_agent, timeout, connect_timeout (seconds), verify, ca_file, proxy,
 * max_response_size (bytes). The Lua layer has checked their types; what reaches a header is checked again here. */
static int l_session(lua_State *L) {
  lc_session *s;
  const char *token, *base, *version, *ua, *ca, *proxy;
  char why[160];
  size_t toklen;
  double max_size;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  s = (lc_session *)lc_newuserdata(L, sizeof *s);
  memset(s, 0, sizeof *s);
  luaL_getmetatable(L, LC_SESSION_MT);
  lua_setmetatable(L, -2);

  lua_getfield(L, 1, "token");
  token = lua_tolstring(L, -1, &toklen);
  if (token == NULL || !lc_check_token(token, toklen, why, sizeof why)) {
    lua_pushnil(L);
    lc_push_error(L, "invalid", "%s", token == NULL ? "token must be a string" : why);
    lc_seterrfield_str(L, "field", "token");
    return 2;
  }
  base = opt_string(L, 1, "base_url");
  version = opt_string(L, 1, "version");
  ua = opt_string(L, 1, "user_agent");
  ca = opt_string(L, 1, "ca_file");
  proxy = opt_string(L, 1, "proxy");
  if (base == NULL || version == NULL || ua == NULL) return luaL_error(L, "leadconnector: session needs base_url, version, user_agent");
  max_size = opt_seconds(L, 1, "max_response_size", 4.0 * 1024 * 1024);
  s->max_size = max_size < 1 ? 1 : (size_t)max_size;
  s->retry_after = -1;

  s->auth = (char *)malloc(toklen + 32);
  s->version = dupstr(version);
  s->base = dupstr(base);
  if (s->auth == NULL || s->version == NULL || s->base == NULL) goto oom;
  snprintf(s->auth, toklen + 32, "Authorization: Bearer %s", token);
  lua_pop(L, 1); /* token */
  s->base_len = strlen(s->base);
  if (!build_headers(s, s->version, &s->hdr_get, &s->hdr_body)) goto oom;

  s->easy = curl_easy_init();
  if (s->easy == NULL) goto oom;
  s->timeout_ms = (long)(opt_seconds(L, 1, "timeout", 30) * 1000);
  SETOPT(CURLOPT_NOSIGNAL, 1L);
  SETOPT(CURLOPT_ERRORBUFFER, s->errbuf);
  SETOPT(CURLOPT_WRITEFUNCTION, on_write);
  SETOPT(CURLOPT_WRITEDATA, s);
  SETOPT(CURLOPT_HEADERFUNCTION, on_header);
  SETOPT(CURLOPT_HEADERDATA, s);
  SETOPT(CURLOPT_READFUNCTION, on_read);
  SETOPT(CURLOPT_READDATA, s);
  SETOPT(CURLOPT_USERAGENT, ua);
  SETOPT(CURLOPT_CONNECTTIMEOUT_MS, (long)(opt_seconds(L, 1, "connect_timeout", 10) * 1000));
  SETOPT(CURLOPT_TIMEOUT_MS, s->timeout_ms);
  SETOPT(CURLOPT_FOLLOWLOCATION, 0L); /* a redirect never carries the token anywhere */
  SETOPT(CURLOPT_PATH_AS_IS, 1L);
  SETOPT(CURLOPT_HEADEROPT, (long)CURLHEADER_SEPARATE); /* our headers never go to a proxy */
  SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
  SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)s->max_size);
#if LIBCURL_VERSION_NUM >= 0x075500
  SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
#else
  SETOPT(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  lua_getfield(L, 1, "verify");
  if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
    SETOPT(CURLOPT_SSL_VERIFYPEER, 0L);
    SETOPT(CURLOPT_SSL_VERIFYHOST, 0L);
  } else {
    SETOPT(CURLOPT_SSL_VERIFYPEER, 1L);
    SETOPT(CURLOPT_SSL_VERIFYHOST, 2L);
  }
  lua_pop(L, 1);
  if (ca) SETOPT(CURLOPT_CAINFO, ca);
  /* No proxy unless one is given: environment variables do not silently reroute the token. */
  SETOPT(CURLOPT_PROXY, proxy ? proxy : "");
  return 1;

setopt_failed:
  session_cleanup(s);
  lua_pushnil(L);
  lc_push_error(L, "invalid", "this libcurl refused an option: %s", s->errbuf[0] ? s->errbuf : "unsupported");
  return 2;
oom:
  session_cleanup(s);
  return luaL_error(L, "leadconnector: out of memory");
}

static int request_left(CURL *e, CURLcode rc) {
  long reqsize = 0;
  switch (rc) {
  case CURLE_UNSUPPORTED_PROTOCOL:
  case CURLE_URL_MALFORMAT:
  case CURLE_COULDNT_RESOLVE_PROXY:
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_CONNECT:
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    return 0;
  default:
    curl_easy_getinfo(e, CURLINFO_REQUEST_SIZE, &reqsize);
    return reqsize > 0;
  }
}

static const char *const OPS[] = {"send", "status", "message", "conversation", "raw", NULL};

/** session:call(op, method, path, body|nil, version|nil, timeout_seconds|nil) -> value | nil, err */
static int l_call(lua_State *L) {
  lc_session *s = check_session(L);
  enum lc_op op = (enum lc_op)luaL_checkoption(L, 2, NULL, OPS);
  const char *method = luaL_checkstring(L, 3);
  size_t plen, blen = 0;
  const char *path = luaL_checklstring(L, 4, &plen);
  const char *body = luaL_optlstring(L, 5, NULL, &blen);
  const char *version = luaL_optstring(L, 6, NULL);
  double tmo = luaL_optnumber(L, 7, -1);
  struct curl_slist *hdrs;
  CURLcode rc;
  long status = 0;
  int capped;
  lc_answer a;

  if (s->busy) return luaL_error(L, "leadconnector: this client is already in a call (one call at a time per client)");
  /* URL = base + path, in session-owned scratch memory. */
  if (s->url_cap < s->base_len + plen + 1) {
    char *p = (char *)realloc(s->url, s->base_len + plen + 1);
    if (p == NULL) return luaL_error(L, "leadconnector: out of memory");
    s->url = p;
    s->url_cap = s->base_len + plen + 1;
  }
  memcpy(s->url, s->base, s->base_len);
  memcpy(s->url + s->base_len, path, plen);
  s->url[s->base_len + plen] = '\0';

  hdrs = body ? s->hdr_body : s->hdr_get;
  if (version != NULL && strcmp(version, s->version) != 0) {
    struct curl_slist *g = NULL, *b = NULL;
    if (strlen(version) > 64 || strpbrk(version, "\r\n") != NULL) return luaL_error(L, "leadconnector: bad version");
    if (!build_headers(s, version, &g, &b)) return luaL_error(L, "leadconnector: out of memory");
    free_slist_wiped(body ? g : b);
    s->hdr_tmp = hdrs = body ? b : g;
  }

  curl_easy_setopt(s->easy, CURLOPT_URL, s->url);
  curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, hdrs);
  curl_easy_setopt(s->easy, CURLOPT_TIMEOUT_MS, tmo > 0 ? (long)(tmo * 1000 + 0.5) : s->timeout_ms);
  if (body == NULL) {
    curl_easy_setopt(s->easy, CURLOPT_CUSTOMREQUEST, strcmp(method, "GET") == 0 ? NULL : method);
    curl_easy_setopt(s->easy, CURLOPT_HTTPGET, 1L);
  } else if (strcmp(method, "POST") == 0) {
    s->up = body;
    s->up_len = blen;
    s->up_pos = 0;
    curl_easy_setopt(s->easy, CURLOPT_CUSTOMREQUEST, NULL);
    curl_easy_setopt(s->easy, CURLOPT_POST, 1L);
    curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, NULL);
    curl_easy_setopt(s->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
  } else {
    curl_easy_setopt(s->easy, CURLOPT_POST, 1L);
    curl_easy_setopt(s->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
    curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, body); /* the body string stays on the Lua stack meanwhile */
    curl_easy_setopt(s->easy, CURLOPT_CUSTOMREQUEST, method);
  }

  s->body_len = 0;
  s->too_big = 0;
  s->rl_now.seen = 0;
  s->retry_after = -1;
  s->trace_id[0] = '\0';
  s->errbuf[0] = '\0';
  s->busy = 1;
  rc = curl_easy_perform(s->easy);
  s->busy = 0;
  s->up = NULL;
  if (s->hdr_tmp) {
    curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, NULL);
    free_slist_wiped(s->hdr_tmp);
    s->hdr_tmp = NULL;
  }
  if (s->rl_now.seen) {
    int i;
    for (i = 0; i < 5; i++)
      if (s->rl_now.seen & (1u << i)) (&s->rl_last.max)[i] = (&s->rl_now.max)[i];
    s->rl_last.seen |= s->rl_now.seen;
  }
  curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);

  a.retry_after = s->retry_after;
  a.trace_id = s->trace_id;
  capped = s->too_big || rc == CURLE_FILESIZE_EXCEEDED;
  if (rc == CURLE_OK || (capped && status >= 300)) {
    /* A complete answer, or an error answer cut at the size cap: classify it by its status. */
    a.status = status;
    a.body = s->body ? s->body : "";
    a.body_len = s->body_len;
    return lc_finish(L, op, &a);
  }
  lua_pushnil(L);
  if (capped) {
    lc_push_error(L, "decode", "answer is larger than max_response_size (%lu bytes)", (unsigned long)s->max_size);
    lc_seterrfield_num(L, "status", (double)status);
  } else {
    lc_push_error(L, rc == CURLE_OPERATION_TIMEDOUT ? "timeout" : "network", "%s",
                  s->errbuf[0] ? s->errbuf : curl_easy_strerror(rc));
  }
  lc_seterrfield_num(L, "curl_code", (double)rc);
  lc_seterrfield_bool(L, "request_sent", request_left(s->easy, rc));
  return 2;
}

static void push_rl(lua_State *L, const lc_ratelimit *rl) {
  static const char *const keys[] = {"max", "remaining", "interval_ms", "daily_limit", "daily_remaining"};
  int i;
  lua_createtable(L, 0, 5);
  for (i = 0; i < 5; i++) {
    if (rl->seen & (1u << i)) {
      double d = (&rl->max)[i];
      if (d == (double)(long long)d) lua_pushinteger(L, (lua_Integer)d);
      else lua_pushnumber(L, d);
      lua_setfield(L, -2, keys[i]);
    }
  }
}

/** session:rate_limit() -> { max, remaining, interval_ms, daily_limit, daily_remaining } (what the last answers said) */
static int l_rate_limit(lua_State *L) {
  lc_session *s = (lc_session *)luaL_checkudata(L, 1, LC_SESSION_MT);
  push_rl(L, &s->rl_last);
  return 1;
}

/** session:last() -> remaining, interval_ms, retry_after  (this call's answer; nil where absent) */
static int l_last(lua_State *L) {
  lc_session *s = (lc_session *)luaL_checkudata(L, 1, LC_SESSION_MT);
  if (s->rl_now.seen & 2u) lua_pushnumber(L, s->rl_now.remaining);
  else lua_pushnil(L);
  if (s->rl_now.seen & 4u) lua_pushnumber(L, s->rl_now.interval_ms);
  else lua_pushnil(L);
  if (s->retry_after >= 0) lua_pushnumber(L, s->retry_after);
  else lua_pushnil(L);
  return 3;
}

static int l_close(lua_State *L) {
  lc_session *s = (lc_session *)luaL_checkudata(L, 1, LC_SESSION_MT);
  if (s->busy) return luaL_error(L, "leadconnector: cannot close a client during its own call");
  session_cleanup(s);
  return 0;
}

static int l_gc(lua_State *L) {
  lc_session *s = (lc_session *)luaL_checkudata(L, 1, LC_SESSION_MT);
  session_cleanup(s);
  return 0;
}

static int l_tostring(lua_State *L) {
  lc_session *s = (lc_session *)luaL_checkudata(L, 1, LC_SESSION_MT);
  lua_pushfstring(L, "leadconnector.Session (%s)", s->easy ? s->base : "closed");
  return 1;
}

static int l_closed(lua_State *L) {
  lc_session *s = (lc_session *)luaL_checkudata(L, 1, LC_SESSION_MT);
  lua_pushboolean(L, s->easy == NULL);
  return 1;
}

static const luaL_Reg session_methods[] = {{"call", l_call},   {"rate_limit", l_rate_limit}, {"last", l_last},
                                           {"close", l_close}, {"closed", l_closed},         {NULL, NULL}};

static int l_curl_version(lua_State *L) {
  curl_version_info_data *d = curl_version_info(CURLVERSION_NOW);
  lua_pushstring(L, d->version);
  lua_pushboolean(L, (d->features & CURL_VERSION_SSL) != 0);
  return 2;
}

const luaL_Reg lc_http_funcs[] = {{"session", l_session}, {"curl_version", l_curl_version}, {NULL, NULL}};

void lc_http_init(lua_State *L) {
  static int inited = 0;
  if (!inited) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) luaL_error(L, "leadconnector: curl_global_init failed");
    inited = 1;
  }
  if (lc_newmetatable(L, LC_SESSION_MT)) {
    lua_newtable(L);
    lc_setfuncs(L, session_methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__gc");
#if LUA_VERSION_NUM >= 504
    lua_pushcfunction(L, l_close);
    lua_setfield(L, -2, "__close");
#endif
    lua_pushcfunction(L, l_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
}
