/* fuzz_reader - the cosocket transport's answer reader (lua/leadconnector/ngx.lua, read_answer), run in this Lua
 * state over a stand-in socket that hands the answer out in fuzzed pieces, as a network would.
 *
 * Input: [mode][piece seed][the answer bytes...]
 *   mode bit 0: HEAD instead of GET; bits 1-2: max_response_size 16 / 1 KiB / 64 KiB / 4 MiB; bit 3: the answer
 *   repeated to 100 KiB (to reach the 64 KiB header cap past libFuzzer's -max_len).
 * Invariants: a read answer has an integer status 100..999, a string body no larger than max_response_size and a
 * boolean keep; a failure is kind network or timeout with a string message; the reader never asks the socket for
 * more than 16 KiB at once nor for nothing, and gives up on headers within 64 KiB + one piece: never unbounded. */
#include "common.h"

static const char CHECK[] =
    "package.preload['leadconnector.core'] = function() return core end\n"
    "local M = dofile('lua/leadconnector/ngx.lua')\n"
    "local read_answer = assert(M._read_answer)\n"
    "local SIZES = { 16, 1024, 65536, 4 * 1024 * 1024 }\n"
    "return function(mode, seed, data)\n"
    "  if mode & 8 ~= 0 and #data > 0 then data = data:rep(102400 // #data + 1):sub(1, 102400) end\n"
    "  local max_size = SIZES[((mode >> 1) & 3) + 1]\n"
    "  local pos, x, given = 1, seed * 2654435761 + 1, 0\n"
    "  local sock = {}\n"
    "  function sock:settimeout(ms) assert(type(ms) == 'number' and ms > 0, 'bad timeout') end\n"
    "  function sock:receiveany(max)\n"
    "    assert(math.type(max) == 'integer' or max == math.floor(max), 'receiveany size not an integer')\n"
    "    assert(max >= 1 and max <= 16384, 'receiveany asked for ' .. tostring(max) .. ' bytes')\n"
    "    if pos > #data then return nil, 'closed' end\n"
    "    x = (x * 1103515245 + 12345) % 2147483648\n"
    "    local n = math.min(max, (x >> 8) % 700 + 1)\n"
    "    local piece = data:sub(pos, pos + n - 1)\n"
    "    pos = pos + #piece\n"
    "    given = given + #piece\n"
    "    return piece\n"
    "  end\n"
    "  local h, kind, msg = read_answer(sock, mode & 1 == 1 and 'HEAD' or 'GET', max_size, core.now() + 1e6, 'fuzz')\n"
    "  if h then\n"
    "    assert(math.type(h.status) == 'integer' and h.status >= 100 and h.status <= 999, 'status ' .. tostring(h.status))\n"
    "    assert(type(h.body) == 'string', 'body not a string')\n"
    "    assert(#h.body <= max_size, 'body past max_response_size')\n"
    "    assert(type(h.keep) == 'boolean', 'keep not a boolean')\n"
    "    if h.trace_id then assert(type(h.trace_id) == 'string' and not h.trace_id:find('%c'), 'trace id') end\n"
    "  else\n"
    "    assert(kind == 'network' or kind == 'timeout', 'failure of kind ' .. tostring(kind))\n"
    "    assert(type(msg) == 'string', 'failure without a message')\n"
    "    if msg:find('bytes of headers', 1, true) then\n"
    "      assert(given <= 65536 + 16384 + 2, 'read ' .. given .. ' bytes before refusing the headers')\n"
    "    end\n"
    "  end\n"
    "end\n";

FZ_INITIALIZE(CHECK)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_State *L = fz_L;
  fz_in in = {data, size, 0};
  unsigned mode = fz_u8(&in), seed = fz_u8(&in);
  fz_push_check(L);
  lua_pushinteger(L, (lua_Integer)mode);
  lua_pushinteger(L, (lua_Integer)seed);
  lua_pushlstring(L, (const char *)in.p + in.i, fz_left(&in));
  fz_call(L, 3, 0);
  fz_end(L);
  return 0;
}
