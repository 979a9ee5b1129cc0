/* fuzz_finish - answers into results: core.finish(op, status, body, retry_after, trace_id, token), the step every
 * transport shares, then every field of what came back is touched (Message/Conversation: each field, tostring,
 * to_table, pairs, ==, a write that must raise; errors: tostring, every field, the decoded body), and no error may
 * hold the token anywhere, even when the answer echoes it.
 *
 * Input: [op][status hi][status lo][retry_after mode][...retry_after][trace len][trace][token len][token][body...]
 *   The token is "SeCrEt" followed by the token bytes mapped onto [A-Za-z0-9._-] (a marker that appears nowhere
 *   else, so any occurrence in an error is a leak); the fuzzer finds it in the body through the comparison hooks.
 *   op % 11 -> send status message conversation raw table table_conversation messages_page conversations_page
 *   export_page bytes (the catalogue's answer shapes); status = u16 % 1000; retry_after mode 1: one byte of
 *   seconds, 2: any 8-byte double (NaN, inf, huge), 3: the same, and error fields overwritten with it before
 *   tostring, else absent; trace len 0 -> no trace id. */
#include "common.h"

static const char *const OPS[] = {"send",          "status",        "message",       "conversation",
                                  "raw",           "table",         "table_conversation", "messages_page",
                                  "conversations_page", "export_page", "bytes"};
#define NOPS (sizeof OPS / sizeof *OPS)

static const char CHECK[] =
    "local KINDS = { invalid=1, network=1, timeout=1, auth=1, not_found=1, rate_limited=1, http=1, server=1, decode=1 }\n"
    "local MSG_FIELDS = { 'id','type','messageType','locationId','contactId','conversationId','dateAdded','body',\n"
    "  'direction','status','contentType','attachments','meta','source','userId','conversationProviderId',\n"
    "  'chatWidgetId','to_table','nope', 1, true }\n"
    "local CONV_FIELDS = { 'id','contactId','locationId','deleted','inbox','type','unreadCount','assignedTo','starred' }\n"
    "local function kind_for(s)\n"
    "  if s == 401 or s == 403 then return 'auth' elseif s == 404 then return 'not_found'\n"
    "  elseif s == 429 then return 'rate_limited' elseif s >= 500 and s <= 599 then return 'server' end\n"
    "  return 'http'\n"
    "end\n"
    "local function one_line(s, what)\n"
    "  assert(type(s) == 'string', what .. ': tostring gave no string')\n"
    "  assert(#s <= 1024, what .. ': tostring longer than 1024 bytes')\n"
    "  assert(not s:find('%c'), what .. ': tostring has a control character')\n"
    "end\n"
    "local function walk(t, depth, seen)\n"
    "  seen = seen or {}\n"
    "  if seen[t] then return end\n"
    "  seen[t] = true\n"
    "  for k, v in pairs(t) do\n"
    "    local _ = tostring(k), tostring(v)\n"
    "    assert(v ~= nil)\n"
    "    if type(v) == 'table' then walk(v, depth + 1, seen) end\n"
    "  end\n"
    "end\n"
    "local function leaks(v, secret, seen)\n"
    "  if type(v) == 'string' then return v:find(secret, 1, true) ~= nil end\n"
    "  if type(v) ~= 'table' then return false end\n"
    "  seen = seen or {}\n"
    "  if seen[v] then return false end\n"
    "  seen[v] = true\n"
    "  for k, x in pairs(v) do if leaks(k, secret, seen) or leaks(x, secret, seen) then return true end end\n"
    "  return false\n"
    "end\n"
    "return function(op, status, body, ra, trace, tamper, secret)\n"
    "  local v, err = core.finish(op, status, body, ra, trace, secret)\n"
    "  if v == nil and secret then\n"
    "    assert(not leaks(err, secret), 'the token is in the error object')\n"
    "    assert(not tostring(err):find(secret, 1, true), 'the token is in tostring(err)')\n"
    "  end\n"
    "  if v == nil then\n"
    "    assert(core.is_error(err), 'nil without an error object')\n"
    "    assert(KINDS[err.kind], 'unknown kind ' .. tostring(err.kind))\n"
    "    if status >= 200 and status <= 299 then\n"
    "      assert(err.kind == 'decode', '2xx failure must be decode, got ' .. err.kind)\n"
    "    else\n"
    "      assert(err.kind == kind_for(status), 'status ' .. status .. ' gave kind ' .. err.kind)\n"
    "    end\n"
    "    assert(err.status == status, 'err.status differs from the answer status')\n"
    "    assert(err.request_sent == true, 'an answer came, so the request was sent')\n"
    "    if ra == ra and ra and ra >= 0 then assert(err.retry_after == ra, 'retry_after lost') end\n"
    "    if err.message ~= nil then assert(type(err.message) == 'string', 'message not a string') end\n"
    "    if err.body ~= nil then assert(type(err.body) == 'string' or type(err.body) == 'table', 'odd body') end\n"
    "    if type(err.body) == 'string' then assert(#err.body <= 4096, 'raw body kept beyond 4096 bytes') end\n"
    "    if type(err.body) == 'table' then walk(err.body, 0) end\n"
    "    for k, x in pairs(err) do local _ = tostring(k), tostring(x) end\n"
    "    one_line(tostring(err), 'error')\n"
    "    err.method, err.path, err.attempts = 'POST', '/conversations/' .. (trace or ''), 3\n"
    "    one_line(tostring(err), 'error with method/path/attempts')\n"
    "    -- errors are plain tables a caller may change; tostring must cope with any value in any field\n"
    "    if tamper then\n"
    "      for _, k in ipairs { 'status', 'attempts', 'kind', 'message', 'trace_id', 'method', 'path' } do\n"
    "        err[k] = tamper\n"
    "        one_line(tostring(err), 'error with ' .. k .. ' = ' .. tostring(tamper))\n"
    "      end\n"
    "    end\n"
    "    return\n"
    "  end\n"
    "  assert(err == nil, 'a value and an error')\n"
    "  assert(status >= 200 and status <= 299, 'success for status ' .. status)\n"
    "  if op == 'send' or op == 'status' then\n"
    "    assert(type(v) == 'table', 'send/status result not a table')\n"
    "    assert(type(v.messageId) == 'string' and #v.messageId > 0, 'success without a messageId')\n"
    "    walk(v, 0)\n"
    "  elseif op == 'raw' or op == 'table' or op == 'table_conversation' then\n"
    "    assert(type(v) == 'table', op .. ' result not a table')\n"
    /* a JSON object under "conversation" becomes a Conversation; any other value (true, 1, "x") stays as it came */
    "    assert(op ~= 'table_conversation' or type(v.conversation) ~= 'table', 'conversation object not wrapped')\n"
    "    if op == 'table_conversation' and type(v.conversation) == 'userdata' then\n"
    "      assert(core.typeof(v.conversation) == 'Conversation', 'conversation not a Conversation')\n"
    "      one_line(tostring(v.conversation), 'Conversation')\n"
    "      local _ = v.conversation:to_table()\n"
    "      v.conversation = nil\n"
    "    end\n"
    "    walk(v, 0)\n"
    "  elseif op == 'bytes' then\n"
    "    assert(type(v) == 'table' and v.body == body, 'bytes not the answer as it came')\n"
    "  elseif op == 'messages_page' or op == 'conversations_page' or op == 'export_page' then\n"
    "    local key = op == 'conversations_page' and 'conversations' or 'messages'\n"
    "    local want = op == 'conversations_page' and 'Conversation' or 'Message'\n"
    "    local list = v[key]\n"
    "    assert(type(list) == 'table', 'page without its list')\n"
    "    for i = 1, #list do\n"
    "      local x = list[i]\n"
    "      if core.typeof(x) then\n"
    "        assert(core.typeof(x) == want, 'page item of the wrong kind')\n"
    "        assert(type(x.id) == 'string', 'page item without an id')\n"
    "        one_line(tostring(x), want)\n"
    "        walk(x:to_table(), 0)\n"
    "      end\n"
    "    end\n"
    "    v[key] = nil\n"
    "    walk(v, 0)\n"
    "  else\n"
    "    local want = op == 'message' and 'Message' or 'Conversation'\n"
    "    assert(core.typeof(v) == want, 'wrong object type')\n"
    "    assert(type(v.id) == 'string' and #v.id > 0, 'object without an id')\n"
    "    for _, f in ipairs(op == 'message' and MSG_FIELDS or CONV_FIELDS) do\n"
    "      local x = v[f]\n"
    "      if type(x) == 'table' then x.mutated = true; assert(v[f].mutated == nil, 'nested table not a copy') end\n"
    "    end\n"
    "    one_line(tostring(v), want)\n"
    "    local t = v:to_table()\n"
    "    assert(type(t) == 'table' and t.id == v.id, 'to_table lost the id')\n"
    "    walk(t, 0)\n"
    "    t.id = 'changed'\n"
    "    assert(v.id ~= 'changed', 'to_table is not a copy')\n"
    "    local n = 0\n"
    "    for k, x in pairs(v) do n = n + 1; assert(x ~= nil); local _ = v[k] end\n"
    "    assert(n > 0, 'pairs found no field')\n"
    "    assert(v == v, 'object not equal to itself')\n"
    "    assert(v == core.wrap(op, { id = v.id }), '== does not compare ids')\n"
    "    assert(not pcall(function() v.id = 'x' end), 'object is writable')\n"
    "    assert(getmetatable(v) ~= nil)\n"
    "  end\n"
    "end\n";

FZ_INITIALIZE(CHECK)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_State *L = fz_L;
  fz_in in = {data, size, 0};
  unsigned op = fz_u8(&in) % NOPS, mode;
  unsigned status = fz_u16(&in) % 1000;
  const char *trace;
  size_t tlen, slen;
  char secret[64];
  fz_push_check(L);
  lua_pushstring(L, OPS[op]);
  lua_pushinteger(L, (lua_Integer)status);
  mode = fz_u8(&in);
  {
    /* The body and trace come after; keep the retry_after aside until the body is pushed. */
    double ra = 0;
    int has_ra = 1;
    if (mode == 1) ra = (double)fz_u8(&in);
    else if (mode == 2 || mode == 3) ra = fz_double(&in);
    else has_ra = 0;
    trace = fz_bytes(&in, 120, &tlen);
    {
      static const char ALNUM[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-";
      size_t k, klen;
      const char *k0 = fz_bytes(&in, 40, &klen);
      memcpy(secret, "SeCrEt", 6);
      for (k = 0; k < klen; k++) secret[6 + k] = ALNUM[(unsigned char)k0[k] % (sizeof ALNUM - 1)];
      slen = klen > 0 ? 6 + klen : 0;
    }
    lua_pushlstring(L, (const char *)in.p + in.i, fz_left(&in)); /* body */
    if (has_ra) lua_pushnumber(L, ra);
    else lua_pushnil(L);
    if (tlen > 0) lua_pushlstring(L, trace, tlen);
    else lua_pushnil(L);
    if (mode == 3) lua_pushnumber(L, ra);
    else lua_pushnil(L);
    if (slen > 0) lua_pushlstring(L, secret, slen);
    else lua_pushnil(L);
  }
  fz_call(L, 7, 0);
  fz_end(L);
  return 0;
}
