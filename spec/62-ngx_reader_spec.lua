--[[ spec/62-ngx_reader_spec.lua -- the cosocket transport's answer reader (leadconnector.ngx's read_answer) in plain
Lua, over a stand-in socket that hands the answer out whole, byte by byte or in pieces, as a network would.
spec/60 and spec/57 drive it inside nginx against real servers; these pin what the reader makes of each header
line (it reads them where they lie in the receive buffer, with the names as servers usually spell them looked up
before lower()) and that a usual answer takes one receive. Runs on Lua 5.4 and LuaJIT: no nginx needed.
]]
local core = require "leadconnector.core"
local M = require "leadconnector.ngx"
local read_answer = assert(M._read_answer)

-- A stand-in cosocket over `data`: receiveany hands out at most `piece` bytes at a time (nil: as many as asked).
local function stand_in(data, piece)
  local pos, asks = 1, {}
  local sock = {}
  function sock:settimeout(ms) assert(type(ms) == "number" and ms > 0, "bad timeout") end
  function sock:receiveany(max)
    assert(max >= 1 and max <= 16384, "receiveany asked for " .. tostring(max) .. " bytes")
    asks[#asks + 1] = max
    if pos > #data then return nil, "closed" end
    local n = piece and math.min(max, piece) or max
    local s = data:sub(pos, pos + n - 1)
    pos = pos + #s
    return s
  end
  return sock, asks
end

local function read(data, piece, method, max_size)
  local sock, asks = stand_in(data, piece)
  local h, kind, msg, nothing = read_answer(sock, method or "GET", max_size or 4 * 1024 * 1024, core.now() + 60,
    "api.test")
  return h, kind, msg, nothing, asks
end

-- The answer whole, byte by byte and in 7-byte pieces: the same outcome each time (returns the first).
local function read_all_ways(data, method)
  local h, kind, msg = read(data, nil, method)
  for _, piece in ipairs { 1, 7 } do
    local h2, kind2, msg2 = read(data, piece, method)
    assert.are.equal(kind, kind2, "piece " .. piece)
    assert.are.equal(msg, msg2, "piece " .. piece)
    if h then
      for _, k in ipairs { "status", "body", "keep", "capped", "retry_after", "trace_id", "content_type", "max",
        "remaining", "interval_ms", "daily_limit", "daily_remaining" } do
        assert.are.equal(h[k], h2[k], k .. ", piece " .. piece)
      end
    end
  end
  return h, kind, msg
end

local BODY = '{"id":"m1","conversationId":"c1"}'
local function answer(headers, body, status)
  body = body or BODY
  local lines = table.concat(headers, "\r\n") .. (#headers > 0 and "\r\n" or "")
  return (status or "HTTP/1.1 200 OK") .. "\r\n" .. lines .. "Content-Length: " .. #body .. "\r\n\r\n" .. body
end

describe("the cosocket answer reader (plain Lua, stand-in socket)", function()
  it("a usual answer: status, body, rate-limit headers, kept alive, and one receive for all of it", function()
    local data = answer { "Server: nginx", "Date: Wed, 02 Dec 2026 14:40:10 GMT",
      "Content-Type: application/json; charset=utf-8", "Connection: keep-alive", "X-RateLimit-Remaining: 99",
      "X-RateLimit-Daily-Remaining: 200000", "X-RateLimit-Max: 100", "X-RateLimit-Interval-Milliseconds: 10000",
      "X-RateLimit-Limit-Daily: 200000" }
    local h, kind, msg, nothing, asks = read(data)
    assert.is_table(h, tostring(kind) .. " " .. tostring(msg) .. " " .. tostring(nothing))
    assert.are.equal(200, h.status)
    assert.are.equal(BODY, h.body)
    assert.is_true(h.keep)
    assert.are.equal("application/json; charset=utf-8", h.content_type)
    assert.are.same({ 100, 99, 10000, 200000, 200000 },
      { h.max, h.remaining, h.interval_ms, h.daily_limit, h.daily_remaining })
    assert.are.equal(1, #asks) -- status line, headers and body from one receive
    assert.same(h.status, (read_all_ways(data)).status)
  end)

  it("header names in any spelling; a name with a space before its colon is no such header", function()
    local h = read_all_ways(answer({ "x-ratelimit-remaining: 7", "X-RATELIMIT-MAX: 8",
      "x-RaTeLiMiT-iNtErVaL-mIlLiSeCoNdS: 9", "CONNECTION: Keep-Alive", "retry-AFTER: 3",
      "X-Ratelimit-Limit-Daily : 5" }, BODY, "HTTP/1.0 429 Too Many Requests"))
    assert.are.equal(429, h.status)
    assert.are.same({ 8, 7, 9, 3 }, { h.max, h.remaining, h.interval_ms, h.retry_after })
    assert.is_falsy(h.daily_limit)
    assert.is_true(h.keep) -- HTTP/1.0 with keep-alive
    local lower = read_all_ways("HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\n{}")
    assert.are.equal("{}", lower.body)
    assert.are.equal("text/plain", lower.content_type)
    -- "Content-Length :" is not Content-Length: the body runs to the end of the connection
    local spaced = read_all_ways("HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\n{}tail")
    assert.are.equal("{}tail", spaced.body)
    assert.is_false(spaced.keep)
  end)

  it("lines without a colon, colons in values, white space around values, LF-only line ends", function()
    local h = read_all_ways(table.concat({ "HTTP/1.1 200 OK", "X-No-Colon-Here", "Cruft", "T", "Xa: b:c:d",
      "X-RateLimit-Remaining: \t 42 \t ", "X-RateLimit-Max:\t50", "X-Trace-Id: abc\1def", "Retry-After:   ",
      "Content-Length: " .. #BODY, "", BODY }, "\n"))
    assert.are.equal(200, h.status)
    assert.are.equal(BODY, h.body)
    assert.are.same({ 42, 50 }, { h.remaining, h.max })
    assert.are.equal("abc?def", h.trace_id)
    assert.is_falsy(h.retry_after)
  end)

  it("rate-limit and Retry-After numbers: plain decimals only", function()
    local cases = {
      { "1.5", 1.5 }, { "0", 0 }, { "007", 7 }, { ("1"):rep(39), tonumber(("1"):rep(39)) }, { ("1"):rep(40), nil },
      { "0x10", nil }, { "1e3", nil }, { "-1", nil }, { "+1", nil }, { ".", nil }, { "1..2", nil }, { "inf", nil },
      { "nan", nil }, { "1 2", nil }, { "", nil },
    }
    for _, c in ipairs(cases) do
      local h = read_all_ways(answer { "X-RateLimit-Remaining: " .. c[1], "Retry-After: " .. c[1] })
      assert.are.equal(c[2], h.remaining or nil, c[1])
      assert.are.equal(c[2], h.retry_after or nil, c[1])
    end
  end)

  it("an interim 1xx answer's headers are forgotten with it", function()
    local h = read_all_ways("HTTP/1.1 100 Continue\r\nX-RateLimit-Remaining: 1\r\nContent-Length: 99\r\n" ..
      "Connection: close\r\nX-Trace-Id: t100\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    assert.are.equal(200, h.status)
    assert.are.equal("{}", h.body)
    assert.is_true(h.keep)
    assert.is_falsy(h.remaining)
    assert.is_falsy(h.trace_id)
  end)

  it("status lines: HTTP/1.0 or 1.1, a space, exactly three digits of at least 100", function()
    for line, status in pairs { ["HTTP/1.1 200"] = 200, ["HTTP/1.1 404 Not Found"] = 404, ["HTTP/1.0 503 x"] = 503,
      ["HTTP/1.1 999"] = 999 } do
      local h = read_all_ways(line .. "\r\nContent-Length: 0\r\n\r\n")
      assert.are.equal(status, h and h.status, line)
    end
    for _, line in ipairs { "HTTP/1.1 2000 OK", "HTTP/1.1 099 Low", "HTTP/1.1  200 OK", "HTTP/2 200", "HTTP/1.1 20",
      "HTTP/1.1 2a0", "HTTP/1.x 200", "http/1.1 200", "ICY 200 OK", "", "HTTP/1.2 200 OK", "HTTP/1.9 200" } do
      local h, kind, msg = read_all_ways(line .. "\r\nContent-Length: 0\r\n\r\n")
      assert.is_nil(h, line)
      assert.are.equal("network", kind, line)
      assert.truthy(msg:find("not an HTTP/1.x status line", 1, true), line)
    end
  end)

  it("a bad Content-Length is a network error", function()
    for _, v in ipairs { "12a", "-1", "", "1 2", "0x10" } do
      local h, kind, msg = read_all_ways("HTTP/1.1 200 OK\r\nContent-Length: " .. v .. "\r\n\r\n{}")
      assert.is_nil(h, v)
      assert.are.equal("network", kind, v)
      assert.truthy(msg:find("bad Content-Length", 1, true), v)
    end
  end)

  it("chunked bodies: white space, upper-case hex, extensions, trailers; 17 hex digits refused", function()
    local h = read_all_ways("HTTP/1.1 200 OK\r\nTransfer-Encoding:  Chunked \r\n\r\n" ..
      " \t3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-Trailer: 1\r\nOther: 2\r\n\r\n")
    assert.are.equal("abc0123456789", h.body)
    assert.is_true(h.keep)
    local bad, kind, msg = read_all_ways("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" ..
      ("0"):rep(17) .. "\r\n\r\n")
    assert.is_nil(bad)
    assert.are.equal("network", kind)
    assert.truthy(msg:find("malformed chunk", 1, true))
    local cut = read_all_ways("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    assert.is_nil(cut)
  end)

  -- The C core's reader (csrc/h1.c, the curl transport's direct engine) has the same rules (spec 58).
  it("refuses a coding never asked for, a chunk size that is no number, data past its size, and a 101", function()
    for what, data in pairs {
      ["gzip, chunked"] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
      ["0x2"] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\n{}\r\n0\r\n\r\n",
      ["2 junk"] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2 junk\r\n{}\r\n0\r\n\r\n",
      ["data past the size"] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY\r\n0\r\n\r\n",
      ["101"] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
    } do
      local h, kind, msg = read_all_ways(data)
      assert.is_nil(h, what)
      assert.are.equal("network", kind, what)
      assert.truthy(msg:find("malformed chunk", 1, true) or msg:find("other than chunked", 1, true)
        or msg:find("switches protocols", 1, true), what .. ": " .. msg)
    end
    local ok = read_all_ways("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2 \t;x=y\r\n{}\r\n0\r\n\r\n")
    assert.are.equal("{}", ok and ok.body)
  end)

  it("headers past 64 KiB are refused without reading on, also in lines without a colon", function()
    for _, line in ipairs { "X-Pad: " .. ("p"):rep(1000), "X" .. ("p"):rep(1000) } do
      local data = "HTTP/1.1 200 OK\r\n" .. (line .. "\r\n"):rep(70) .. "Content-Length: 2\r\n\r\n{}"
      local h, kind, msg, _, asks = read(data, 700)
      assert.is_nil(h)
      assert.are.equal("network", kind)
      assert.truthy(msg:find("more than 65536 bytes of headers", 1, true), msg)
      local given = 0
      for _, a in ipairs(asks) do given = given + math.min(a, 700) end
      assert.is_true(given <= 65536 + 16384 + 2, "read " .. given .. " bytes")
    end
  end)

  it("bytes past the answer: the connection is not kept; nothing at all: nothing = true", function()
    -- (bytes that came with the answer: ones still on their way are the next reader's problem)
    local h = read(answer({ "X-RateLimit-Remaining: 5" }) .. "HTTP/1.1 200 OK\r\n")
    assert.are.equal(BODY, h.body)
    assert.is_false(h.keep)
    local none, kind, _, nothing = read("")
    assert.is_nil(none)
    assert.are.equal("network", kind)
    assert.is_true(nothing)
    local partial, kind2, _, nothing2 = read("HTTP/1.1 200 OK\r\nContent-Le")
    assert.is_nil(partial)
    assert.are.equal("network", kind2)
    assert.is_falsy(nothing2)
  end)
end)
