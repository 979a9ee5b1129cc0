/* fuzz_build - request validation and the request bodies: core.build_send / core.build_status, and (mode bits 2-3)
 * the catalogue's other input paths: query strings (core.build_query), multipart bodies (core.build_multipart) and
 * the JSON body of any operation (core.build with the catalogue's compiled schemas), with Lua tables
 * built from the input bytes (field names mostly from the API's own lists, so the fuzzer gets past the "unknown
 * field" check; values of every Lua type, nested tables, sequences and holes, shared tables and cycles,
 * NaN/inf, cjson.null, functions, invalid UTF-8).
 *
 * Input: [mode: bit0 send/status, bit1 allow_unknown, bits 2-3: 0 send/status body, 1 query (bit0: search or
 * get_messages), 2 multipart upload (a second table gives the files), 3 the body of catalogue operation [op]][op]
 * [table program...]
 * Query: only unreserved bytes, %XX, = and & in it; every name known unless allow_unknown; strings come back byte for
 * byte. Multipart: every file part's bytes as given, the closing delimiter last. Any body: valid UTF-8 throughout
 * (strings and keys nested in unknown fields included) and a JSON object.
 * Invariants: the call never raises; a body is a JSON object that cjson decodes, carries every field the table
 * gave (strings byte for byte, empty arrays as []), only known fields unless allow_unknown, valid UTF-8 in every
 * string the library checked; a refusal is kind "invalid" with a field name, request_sent = false, one line. */
#include "common.h"

static const char *const NAMES[] = {
    /* send */
    "type", "contactId", "subType", "appointmentId", "attachments", "emailFrom", "emailCc", "emailBcc", "html",
    "message", "subject", "replyMessageId", "templateId", "threadId", "scheduledTimestamp", "conversationProviderId",
    "emailTo", "customSubtypeId", "emailReplyMode", "fromNumber", "toNumber", "forward", "status",
    "usesNativeSchedulingAi", "optimizationPeriod",
    /* forward */
    "isForwarded", "forwardWholeThread", "messageId", "emailMessageId", "sourceContactId", "sourceConversationId",
    "toEmail", "recipientContactId", "recipientConversationId",
    /* status */
    "error", "recipients", "code", "emailId",
    /* near misses */
    "Type", "contactid", "", "type ", "statu"};
#define NNAMES (sizeof NAMES / sizeof *NAMES)

static const char *const WORDS[] = {"SMS", "RCS", "Email", "WhatsApp", "IG", "FB", "Custom", "Live_Chat", "TIKTOK",
                                    "delivered", "failed", "pending", "read", "reply", "reply_all", "24h", "48h",
                                    "72h", "c1", "sms", "", "\xff", "\xc3\xa9", "\xed\xa0\x80", "a\r\nb"};
#define NWORDS (sizeof WORDS / sizeof *WORDS)

#define MAX_DEPTH 12
#define MAX_TABLES 64

typedef struct gen {
  fz_in in;
  int anchors; /* stack slot of a table holding every table made so far (for shared references and cycles) */
  int ntables;
} gen;

static void push_table(lua_State *L, gen *g, int depth);

static void push_value(lua_State *L, gen *g, int depth) {
  unsigned t = fz_u8(&g->in) % 12;
  size_t n;
  const char *s;
  switch (t) {
  case 0:
  case 1:
    s = fz_bytes(&g->in, 64, &n);
    lua_pushlstring(L, s, n);
    break;
  case 2:
  case 3:
    lua_pushstring(L, WORDS[fz_u8(&g->in) % NWORDS]);
    break;
  case 4:
    lua_pushinteger(L, (lua_Integer)(int32_t)((fz_u16(&g->in) << 16) | fz_u16(&g->in)));
    break;
  case 5:
    lua_pushnumber(L, fz_double(&g->in));
    break;
  case 6:
    lua_pushboolean(L, fz_u8(&g->in) & 1);
    break;
  case 7:
  case 8:
    if (depth < MAX_DEPTH) push_table(L, g, depth + 1);
    else lua_pushboolean(L, 1);
    break;
  case 9:
    if (g->ntables > 0) lua_rawgeti(L, g->anchors, (lua_Integer)(fz_u8(&g->in) % g->ntables + 1)); /* maybe a cycle */
    else lua_pushinteger(L, 0);
    break;
  case 10:
    lua_pushlightuserdata(L, NULL); /* what cjson uses for null */
    break;
  default:
    if (fz_u8(&g->in) & 1) lua_pushcfunction(L, fz_traceback);
    else lua_pushnumber(L, 0.5);
    break;
  }
}

/* A table: [kind][count] then per entry [key selector][key bytes?][value]. kind & 1: a sequence 1..count. */
static void push_table(lua_State *L, gen *g, int depth) {
  unsigned kind = fz_u8(&g->in), count = fz_u8(&g->in) % 9, i;
  int t;
  luaL_checkstack(L, 8, "fuzz");
  lua_newtable(L);
  t = lua_gettop(L);
  if (g->ntables < MAX_TABLES) {
    lua_pushvalue(L, t);
    lua_rawseti(L, g->anchors, (lua_Integer)++g->ntables);
  }
  for (i = 0; i < count && fz_left(&g->in) > 0; i++) {
    if (kind & 1) {
      push_value(L, g, depth);
      lua_rawseti(L, t, (lua_Integer)(i + 1 + ((kind & 6) == 6 && i == count - 1))); /* a hole, sometimes */
      continue;
    }
    {
      unsigned k = fz_u8(&g->in);
      if (k < 200) {
        lua_pushstring(L, NAMES[k % NNAMES]);
      } else if (k < 240) {
        size_t n;
        const char *s = fz_bytes(&g->in, 32, &n);
        lua_pushlstring(L, s, n);
      } else if (k < 250) {
        lua_pushinteger(L, (lua_Integer)(k - 245));
      } else if (k < 253) {
        lua_pushnumber(L, 1.5);
      } else {
        lua_pushboolean(L, 1);
      }
    }
    push_value(L, g, depth);
    lua_rawset(L, t);
  }
}

static const char CHECK[] =
    "local cjson = require('cjson').new()\n"
    "local SEND = {}\n"
    "for k in ('type contactId subType appointmentId attachments emailFrom emailCc emailBcc html message subject '\n"
    "  .. 'replyMessageId templateId threadId scheduledTimestamp conversationProviderId emailTo customSubtypeId '\n"
    "  .. 'emailReplyMode fromNumber toNumber forward status usesNativeSchedulingAi optimizationPeriod'):gmatch('%S+')\n"
    "do SEND[k] = true end\n"
    "local STATUS = { status = true, error = true, emailMessageId = true, recipients = true }\n"
    "local ARRAYS = { attachments = true, emailCc = true, emailBcc = true, recipients = true }\n"
    "local DEBUG = os.getenv('FZ_DEBUG')\n"
    "local function utf8_ok(s) return utf8.len(s) ~= nil and not s:find('\\237[\\160-\\191]') end\n"
    "local catalogue = require('leadconnector.catalogue')\n"
    "local OPS, BODY_OPS = {}, {}\n"
    "for _, op in ipairs(catalogue.operations) do\n"
    "  OPS[op.name] = op\n"
    "  if op.body and op.content == 'json' then BODY_OPS[#BODY_OPS + 1] = op end\n"
    "end\n"
    "local compiled = {}\n"
    "local function schema_of(op, part)\n"
    "  local key = op.name .. part\n"
    "  if not compiled[key] then\n"
    "    local list = {}\n"
    "    for _, f in ipairs(op[part] or {}) do list[#list + 1] = f end\n"
    "    compiled[key] = core.compile(list)\n"
    "  end\n"
    "  return compiled[key]\n"
    "end\n"
    "local function unescape(x) return (x:gsub('%%(%x%x)', function(h) return string.char(tonumber(h, 16)) end)) end\n"
    "local function refusal(err)\n"
    "  assert(core.is_error(err), 'nil without an error object')\n"
    "  assert(err.kind == 'invalid' and err.request_sent == false, 'refusal not invalid/request_sent=false')\n"
    "  local s = tostring(err)\n"
    "  assert(#s <= 1024 and not s:find('%c'), 'tostring(err) not one short line')\n"
    "end\n"
    "local function other(which, t, allow, t2, opn)\n"
    "  if which == 'query' then\n"
    "    local op = OPS[opn % 2 == 0 and 'search_conversations' or 'get_messages']\n"
    "    local known = {}\n"
    "    for _, f in ipairs(op.query) do known[f.name] = f end\n"
    "    local q, err = core.build_query(schema_of(op, 'query'), t, allow)\n"
    "    if not q then return refusal(err) end\n"
    "    assert(q == '' or q:sub(1, 1) == '?', 'query does not start with ?')\n"
    "    assert(not q:find('[^%w%-%._~%%=&?]'), 'query has a byte that is not encoded: ' .. q)\n"
    "    for pair in q:sub(2):gmatch('[^&]+') do\n"
    "      local k, v = pair:match('^([^=]*)=(.*)$')\n"
    "      assert(k, 'pair without =')\n"
    "      k, v = unescape(k), unescape(v)\n"
    "      if not allow then assert(known[k], 'unknown query parameter sent: ' .. k) end\n"
    "      if known[k] and type(t[k]) == 'string' then assert(v == t[k], 'query value changed: ' .. k) end\n"
    "      assert(utf8.len(v) and utf8.len(k), 'invalid UTF-8 in the query')\n"
    "    end\n"
    "    return\n"
    "  elseif which == 'multipart' then\n"
    "    local op = OPS.upload_attachments\n"
    "    local files = {}\n"
    "    if type(t2) == 'table' then\n"
    "      for i = 1, #t2 do\n"
    "        local v = t2[i]\n"
    "        files[i] = type(v) == 'string' and { name = 'f' .. i .. '.bin', content = v } or v\n"
    "      end\n"
    "    end\n"
    "    local body, ctype = core.build_multipart(schema_of(op, 'body'), t, files, 'fileAttachment', 5, 4096, allow)\n"
    "    if not body then return refusal(ctype) end\n"
    "    local boundary = ctype:match('^multipart/form%-data; boundary=(.+)$')\n"
    "    assert(boundary, 'content type without a boundary')\n"
    "    local close = '--' .. boundary .. '--\\r\\n'\n"
    "    assert(body:sub(-#close) == close, 'body does not end with the closing delimiter')\n"
    "    local n = 0\n"
    "    for _ in body:gmatch('filename=') do n = n + 1 end\n"
    "    assert(n >= #files, 'fewer file parts than files')\n"
    "    for i = 1, #files do\n"
    "      assert(not files[i].content:find(boundary, 1, true), 'a file holds the boundary')\n"
    "      assert(body:find('\\r\\n\\r\\n' .. files[i].content .. '\\r\\n--' .. boundary, 1, true), 'file ' .. i .. ' changed')\n"
    "    end\n"
    "    return\n"
    "  end\n"
    "  local op = BODY_OPS[opn % #BODY_OPS + 1]\n"
    "  local body, err = core.build(schema_of(op, 'body'), t, allow)\n"
    "  if not body then return refusal(err) end\n"
    "  assert(utf8.len(body) and not body:find('\\237[\\160-\\191]'), 'body of ' .. op.name .. ' is not valid UTF-8')\n"
    "  local ok, dec = pcall(cjson.decode, body)\n"
    "  assert(ok and type(dec) == 'table', 'body of ' .. op.name .. ' does not decode to an object')\n"
    "end\n"
    "return function(which, t, allow, t2, opn)\n"
    "  if which ~= 'send' and which ~= 'status' then return other(which, t, allow, t2, opn) end\n"
    "  local build = which == 'send' and core.build_send or core.build_status\n"
    "  local known = which == 'send' and SEND or STATUS\n"
    "  local body, err = build(t, allow)\n"
    "  if DEBUG then io.stderr:write(which, ' -> ', tostring(body or err), '\\n') end\n"
    "  if body == nil then\n"
    "    assert(core.is_error(err), 'nil without an error object')\n"
    "    assert(err.kind == 'invalid', 'refusal of kind ' .. tostring(err.kind))\n"
    "    assert(err.request_sent == false, 'refusal without request_sent = false')\n"
    "    assert(type(err.message) == 'string' and #err.message > 0, 'refusal without a message')\n"
    "    local s = tostring(err)\n"
    "    assert(#s <= 1024 and not s:find('%c'), 'tostring(err) not one short line')\n"
    "    return\n"
    "  end\n"
    "  assert(type(body) == 'string', 'body not a string')\n"
    "  assert(body:sub(1, 1) == '{' and body:sub(-1) == '}', 'body not a JSON object')\n"
    "  local ok, dec = pcall(cjson.decode, body)\n"
    "  assert(ok, 'body does not decode: ' .. tostring(dec) .. ' in ' .. body)\n"
    "  assert(type(dec) == 'table', 'body decodes to a ' .. type(dec))\n"
    "  if which == 'send' then\n"
    "    assert(type(t.type) == 'string' and dec.type == t.type, 'type lost')\n"
    "    assert(type(t.contactId) == 'string' and #t.contactId > 0 and dec.contactId == t.contactId, 'contactId lost')\n"
    "  else\n"
    "    assert(dec.status == t.status, 'status lost')\n"
    "  end\n"
    "  local n = 0\n"
    "  for k, v in pairs(t) do\n"
    "    n = n + 1\n"
    "    assert(type(k) == 'string', 'a non-string key was accepted')\n"
    "    if not allow then assert(known[k], 'unknown field accepted: ' .. k) end\n"
    "    if known[k] then\n"
    "      if type(v) == 'string' then\n"
    "        assert(dec[k] == v, 'field ' .. k .. ' changed on the way')\n"
    "        assert(utf8_ok(v), 'field ' .. k .. ' accepted with invalid UTF-8')\n"
    "      end\n"
    "      if ARRAYS[k] then\n"
    "        assert(type(v) == 'table' and #v == #dec[k], 'array ' .. k .. ' changed length')\n"
    "        if next(v) == nil then assert(body:find('\"' .. k .. '\":[]', 1, true), 'empty ' .. k .. ' not sent as []') end\n"
    "      end\n"
    "      if type(v) == 'number' then assert(dec[k] == v, 'number ' .. k .. ' changed') end\n"
    "      if type(v) == 'boolean' then assert(dec[k] == v, 'boolean ' .. k .. ' changed') end\n"
    "    end\n"
    "  end\n"
    "  local m = 0\n"
    "  for _ in pairs(dec) do m = m + 1 end\n"
    "  assert(m == n, 'body has ' .. m .. ' fields, the table ' .. n)\n"
    "end\n";

FZ_INITIALIZE(CHECK)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_State *L = fz_L;
  gen g;
  unsigned mode;
  memset(&g, 0, sizeof g);
  g.in.p = data;
  g.in.n = size;
  mode = fz_u8(&g.in);
  lua_newtable(L);
  g.anchors = lua_gettop(L);
  fz_push_check(L);
  switch ((mode >> 2) & 3) {
  case 0: lua_pushstring(L, (mode & 1) ? "status" : "send"); break;
  case 1: lua_pushstring(L, "query"); break;
  case 2: lua_pushstring(L, "multipart"); break;
  default: lua_pushstring(L, "body"); break;
  }
  {
    unsigned kind = (mode >> 2) & 3;
    unsigned opn = kind == 1 ? (mode & 1) : kind == 3 ? fz_u8(&g.in) : 0; /* [op] only for "the body of op" */
    push_table(L, &g, 0);
    lua_pushboolean(L, (mode & 2) != 0);
    if (((mode >> 2) & 3) == 2) push_table(L, &g, 0);
    else lua_pushnil(L);
    lua_pushinteger(L, (lua_Integer)opn);
  }
  fz_call(L, 5, 0);
  lua_pop(L, 1); /* anchors */
  fz_end(L);
  return 0;
}
