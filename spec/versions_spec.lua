-- What differs between Lua 5.1, 5.2, 5.3, 5.4 and LuaJIT, and what must not.
-- make test LUA=lua5.1 (lua5.2, lua5.3, luajit) runs the whole suite there.
local shm = require "shm"
local H = require "helpers"

describe("Lua versions", function()
  local seg
  before_each(function() seg = assert(shm.create(shm.PRIVATE, 64)) end)
  after_each(function()
    seg:remove()
    seg:detach()
  end)

  it("run on the interpreter make test was asked for", function()
    local want = H.lua -- LUA, as make test passes it
    if want == "luajit" then
      assert.is_table(jit)
    else
      assert.equal("Lua " .. want:match("%d+%.%d+$"), _VERSION)
      assert.is_nil(jit)
    end
  end)

  it("have __close (segments, mutexes, queues) only where the language has <close>", function()
    local q = assert(shm.queue.create(H.key(), 64))
    local m = seg:mutex(0)
    for _, obj in ipairs({ seg, m, q }) do
      local mt = debug.getmetatable(obj) -- (getmetatable gives only the class name)
      assert.is_function(mt.__gc)
      if H.lua54 then assert.is_function(mt.__close) else assert.is_nil(mt.__close) end
    end
    q:remove()
    q:detach()
    H.cleanup()
  end)

  it("take whole numbers (and integral floats) and reject the rest alike", function()
    seg:write("abcdef")
    assert.equal("bc", seg:read(1, 2))
    assert.equal("bc", seg:read(1.0, 2.0))
    assert.equal("bc", seg:read("1", "2"), "numeric strings convert, as in Lua")
    for _, bad in ipairs({ 0.5, 2 ^ 63, -2 ^ 63 - 4096, 1 / 0, 0 / 0 }) do
      assert.error_matches(function() seg:read(bad) end, "offset has no integer representation")
      assert.error_matches(function() seg:store(0, bad) end, "number has no integer representation")
    end
    assert.error_matches(function() seg:read({}) end, "integer expected, got table")
    assert.error_matches(function() seg:load(0 / 0) end, "no integer representation")
  end)

  it("print big integers exactly in messages", function()
    assert.error_matches(function() seg:read(2 ^ 53) end,
      "offset 9007199254740992 out of range %(segment size 64%)")
    assert.error_matches(function() seg:read(-2 ^ 62) end, "offset %-4611686018427387904 out of range")
    assert.error_matches(function() seg:write("x", 64 + 2 ^ 40) end, "offset 1099511627840 out of range")
    assert.matches("^shm%.segment%(sysv key=0x0 id=%d+ size=64 rw%)$", tostring(seg))
  end)

  it("carry integers exactly: to 2^53 everywhere, all 64 bits from 5.3 on", function()
    for _, v in ipairs({ 2 ^ 53, -2 ^ 53, 2 ^ 53 - 1, H.minint, 2 ^ 62 + 2 ^ 11 }) do
      assert.equal(v, seg:store(0, v):load(0))
      assert.equal(v, (seg:unpack(seg:pack(8, "j", v) - 8, "j")))
    end
    if H.int64 then
      assert.equal(math.maxinteger, seg:store(0, math.maxinteger):load(0))
      local odd = math.tointeger(2 ^ 53) + 1 -- no double has it
      assert.equal(odd, seg:store(0, odd):load(0))
    end
  end)
end)
