-- The store under the process limiter (leadconnector.limiter's table store): what the one algorithm relies on of
-- every store — a value until its time to live has passed and never after, add only where nothing live is, incr from
-- nothing, mget of up to five keys — including the ring that holds the numbered slots, which must keep every live
-- slot however many there are (it grows) and reuse the places of expired ones. A store that lost a live slot would
-- let a send through while the one it waited for still counts: a 429 the headers foretold.
local limiter = require "leadconnector.limiter"

describe("the process limiter's store", function()
  local t
  local function store()
    t = 1000
    local S = limiter._table_store(function() return t end)
    S.now()
    return S
  end

  it("keeps a named value until its time to live has passed, then reads it as absent", function()
    local S = store()
    assert.is_true(S.set("m", 100, 10))
    assert.are.equal(100, S.get("m"))
    t = 1009.9 S.now()
    assert.are.equal(100, S.get("m"))
    t = 1010 S.now()
    assert.is_nil(S.get("m"))
  end)

  it("mget reads up to five named keys at once, nil for absent, expired or not asked", function()
    local S = store()
    S.set("m", 100, 10) S.set("w", 2000, 1) S.set("b", 7, 100)
    local m, w, b, d, f = S.mget("m", "w", "b", "d", "f")
    assert.are.same({ 100, 2000, 7 }, { m, w, b })
    assert.is_nil(d) assert.is_nil(f)
    t = 1001 S.now()
    m, w, b = S.mget("m", "w", "b")
    assert.are.equal(100, m) assert.is_nil(w) assert.are.equal(7, b)
    local x, y, z = S.mget("m", "b")
    assert.are.equal(100, x) assert.are.equal(7, y) assert.is_nil(z)
  end)

  it("add takes a key only where nothing live is, named or numbered", function()
    local S = store()
    assert.is_true(S.add("p", 1, 30))
    assert.is_false(S.add("p", 2, 30))
    assert.are.equal(1, S.get("p"))
    assert.is_true(S.add(5, -1, 3))
    assert.is_false(S.add(5, 0, 3))
    assert.are.equal(-1, S.get(5))
    t = 1003 S.now()
    assert.is_true(S.add(5, 0, 3))  -- expired: free again
    assert.is_true(S.add("p", 3, 30) == false)
    t = 1031 S.now()
    assert.is_true(S.add("p", 3, 30))
    assert.are.equal(3, S.get("p"))
  end)

  it("incr counts from nothing, and on from the value it holds", function()
    local S = store()
    assert.are.equal(1, S.incr("q", 1))
    assert.are.equal(2, S.incr("q", 1))
    assert.are.equal(-3, S.incr("d", -3))
    assert.are.equal(7, S.incr("q", 5))
  end)

  it("keeps 20,000 live slots (the ring grows) and every one reads back its own value", function()
    local S = store()
    for k = 1, 20000 do assert.is_true(S.add(k, -k, 60)) end
    for k = 1, 20000 do
      if S.get(k) ~= -k then error(("slot %d reads %s"):format(k, tostring(S.get(k)))) end
    end
    assert.is_false(S.add(12345, 0, 60))
    assert.is_nil(S.get(20001))
    assert.is_nil(S.get(0))
  end)

  it("a slot written over in place keeps its newest value and time to live", function()
    local S = store()
    S.add(42, -1, 5)
    S.set(42, 1003.5, 2)
    assert.are.equal(1003.5, S.get(42))
    t = 1002 S.now()
    assert.is_nil(S.get(42))
  end)

  it("reuses the places of expired slots: a window's worth of live slots, 100,000 sends, a ring that stays small",
    function()
      local S = store()
      for k = 1, 100000 do
        t = 1000 + k / 1000      -- 1,000 sends a second, each live for 2 s: about 2,000 live at any time
        S.now()
        assert(S.add(k, -1, 2))
        if k > 2100 and S.get(k - 2100) ~= nil then error("slot " .. (k - 2100) .. " outlived its time to live") end
        if S.get(k - 1500) == nil and k > 1500 then error("slot " .. (k - 1500) .. " lost while live") end
      end
      assert.is_true(S.ring_size() <= 4096, "a ring of " .. S.ring_size() .. " places for about 2,000 live slots")
      -- and the live slots read back: the last 1,999 sends
      for k = 100000 - 1998, 100000 do assert(S.get(k) == -1, "slot " .. k) end
    end)
end)
