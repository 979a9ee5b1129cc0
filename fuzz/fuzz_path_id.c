/* fuzz_path_id - what may become part of a request line or a header: core.path_id (ids placed in the URL path),
 * core.check_token (the Authorization header) and core.check_header (Version, User-Agent).
 *
 * Input: [name selector][the bytes of the id/token/header value...]
 * Invariants: an accepted id encodes to exactly one path segment of unreserved characters and %XX escapes that
 * decodes back to the id; dot segments and control characters are refused; an accepted token has no byte a
 * header line cannot carry; every refusal is kind "invalid", names its field, says request_sent = false, and
 * never echoes the value (checked with a marker prefix). */
#include "common.h"

static const char CHECK[] =
    "local MARK = 'SECRETxq'\n"
    "local function one_line(s)\n"
    "  assert(type(s) == 'string' and #s <= 1024 and not s:find('%c'), 'tostring(err) not one short line')\n"
    "end\n"
    "local function refused(err, field, value)\n"
    "  assert(core.is_error(err), 'nil without an error object')\n"
    "  assert(err.kind == 'invalid', 'refusal of kind ' .. tostring(err.kind))\n"
    "  assert(err.field == field, 'refusal names field ' .. tostring(err.field) .. ', not ' .. field)\n"
    "  assert(err.request_sent == false, 'refusal without request_sent = false')\n"
    "  local s = tostring(err)\n"
    "  one_line(s)\n"
    "  if value:find(MARK, 1, true) then\n"
    "    assert(not s:find(MARK, 1, true), 'the refused value is echoed in tostring(err)')\n"
    "    assert(not (err.message or ''):find(MARK, 1, true), 'the refused value is echoed in err.message')\n"
    "  end\n"
    "end\n"
    "local function unescape(seg)\n"
    "  return (seg:gsub('%%(%x%x)', function(h) return string.char(tonumber(h, 16)) end))\n"
    "end\n"
    "local NAMES = { 'id', 'messageId', 'conversationId' }\n"
    "return function(sel, s)\n"
    "  for _, v in ipairs { s, MARK .. s } do\n"
    "    local name = NAMES[sel % 3 + 1]\n"
    "    local seg, err = core.path_id(v, name)\n"
    "    if seg then\n"
    "      assert(err == nil)\n"
    "      assert(#v > 0 and not v:find('%c') and v ~= '.' and v ~= '..', 'accepted a bad id')\n"
    "      assert(seg:find('^[%w%-%._~%%]+$'), 'segment has a reserved character: ' .. seg)\n"
    "      assert(not seg:find('%%%x?[^%x]') and not seg:find('%%%x?$'), 'broken escape')\n"
    "      assert(seg ~= '.' and seg ~= '..', 'dot segment')\n"
    "      assert(unescape(seg) == v, 'segment does not decode back to the id')\n"
    "      assert(not seg:find('[/?#]'), 'segment can change the endpoint')\n"
    "    else\n"
    "      refused(err, name, v)\n"
    "    end\n"
    "    local ok, terr = core.check_token(v)\n"
    "    if ok then\n"
    "      assert(#v > 0 and not v:find('[\\0-\\32\\127-\\255]'), 'token accepted with a byte a header cannot carry')\n"
    "    else\n"
    "      refused(terr, 'token', v)\n"
    "    end\n"
    "    local hok, herr = core.check_header(v, 'user_agent')\n"
    "    if hok then\n"
    "      assert(#v > 0 and not v:find('[\\r\\n\\0]'), 'header value accepted with CR, LF or NUL')\n"
    "    else\n"
    "      refused(herr, 'user_agent', v)\n"
    "    end\n"
    "  end\n"
    "  -- non-strings are refused too, never raised\n"
    "  local seg, err = core.path_id(#s, 'id')\n"
    "  assert(seg == nil and err.kind == 'invalid')\n"
    "end\n";

FZ_INITIALIZE(CHECK)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_State *L = fz_L;
  fz_in in = {data, size, 0};
  unsigned sel = fz_u8(&in);
  fz_push_check(L);
  lua_pushinteger(L, (lua_Integer)sel);
  lua_pushlstring(L, (const char *)in.p + in.i, fz_left(&in));
  fz_call(L, 2, 0);
  fz_end(L);
  return 0;
}
