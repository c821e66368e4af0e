-- Atomics, wait/notify and the robust mutex, across real processes.
local shm = require "shm"
local H = require "helpers"

-- a fresh private 4 KiB segment for every test of the block: seg()
local function private_segment()
  local seg
  before_each(function() seg = assert(shm.create(shm.PRIVATE, 4096)) end)
  after_each(function()
    seg:remove()
    seg:detach()
    H.cleanup()
  end)
  return function() return seg end
end

describe("atomics", function()
  local get = private_segment()
  local seg
  before_each(function() seg = get() end)

  it("load, store, add and cas 64-bit integers", function()
    assert.equal(0, seg:load(0))
    assert.equal(seg, seg:store(8, -5))
    assert.equal(-5, seg:load(8))
    assert.equal(5, seg:add(8, 10))
    assert.equal(H.minint, seg:add(16, H.minint))
    local ok, cur = seg:cas(8, 5, 42)
    assert.is_true(ok)
    assert.equal(5, cur)
    ok, cur = seg:cas(8, 5, 7)
    assert.is_false(ok)
    assert.equal(42, cur)
    assert.equal(42, seg:unpack(8, "j"), "the same bytes as string.pack's j")
  end)

  it("wraps around like Lua integers", function()
    -- 2^63 - 1 as raw bytes (x86-64 is little-endian): 5.1 has no number for it
    seg:write("\255\255\255\255\255\255\255\127", 0)
    if H.int64 then assert.equal(math.maxinteger, seg:load(0)) end
    assert.equal(H.minint, seg:add(0, 1))
  end)

  it("rejects misaligned, out-of-range and non-integer arguments", function()
    assert.error_matches(function() seg:load(4) end, "not 8%-byte aligned")
    assert.error_matches(function() seg:store(3, 1) end, "not 8%-byte aligned")
    assert.error_matches(function() seg:load(4096) end, "out of range")
    assert.error_matches(function() seg:load(4089) end, "out of range")
    assert.error_matches(function() seg:load(-8) end, "out of range")
    assert.error_matches(function() seg:add(0, 1.5) end, "number has no integer representation")
    assert.error_matches(function() seg:cas(0, 1) end, "number expected, got no value")
    assert.error_matches(function() seg:wait(0, 0, -1) end, "non%-negative")
    assert.error_matches(function() seg:wait(0, 0, 0 / 0) end, "non%-negative")
    assert.error_matches(function() seg:notify(0, -1) end, "negative")
  end)

  it("loads from a read-only attachment and refuses to store", function()
    local ro = assert(shm.attach(seg.id, "r"))
    seg:store(0, 99)
    assert.equal(99, ro:load(0))
    assert.error_matches(function() ro:store(0, 1) end, "read%-only")
    assert.error_matches(function() ro:add(0, 1) end, "read%-only")
    assert.error_matches(function() ro:cas(0, 99, 1) end, "read%-only")
    assert.error_matches(function() ro:mutex(64) end, "read%-only")
    ro:detach()
  end)

  it("adds atomically from several processes", function()
    local kids = {}
    for i = 1, 4 do
      kids[i] = H.spawn([[
        local shm = require "shm"
        local seg = assert(shm.attach(tonumber((...))))
        for _ = 1, 20000 do seg:add(0, 1) end
      ]], { seg.id })
    end
    for i = 1, 4 do assert.equal(0, select(2, kids[i]:finish())) end
    assert.equal(80000, seg:load(0))
  end)
end)

describe("wait and notify", function()
  local get = private_segment()
  local seg
  before_each(function() seg = get() end)

  it("returns at once when the value already differs", function()
    seg:store(0, 1)
    assert.is_true(seg:wait(0, 0))
    assert.is_true(seg:wait(0, 0, 0))
  end)

  it("honours timeouts to about a millisecond", function()
    for _, t in ipairs({ 0, 0.001, 0.02, 0.1 }) do
      local t0 = H.now()
      local ok, why = seg:wait(0, 0, t)
      local dt = H.now() - t0
      assert.is_false(ok)
      assert.equal("timeout", why)
      assert.is_true(dt >= t, "woke early")
      assert.is_true(dt < t + 0.05, "woke late: " .. dt)
    end
  end)

  it("sleeps without spinning until another process notifies", function()
    local child = H.spawn([[
      local shm = require "shm"
      local seg = assert(shm.attach(tonumber((...))))
      print("ready") io.stdout:flush()
      print(seg:wait(0, 0))
    ]], { seg.id })
    local pid = child.pid
    assert(child:line() == "ready")
    assert.is_true(H.until_true(function() return H.state(pid) == "S" end))
    local before = H.cputicks(pid)
    seg:wait(8, 0, 0.3) -- let it sleep 0.3 s (nobody notifies slot 8)
    local used = H.cputicks(pid) - before
    assert.is_true(used <= 2, "the waiter used " .. used .. " ticks of CPU while waiting")
    seg:store(0, 1)
    assert.equal(1, seg:notify(0))
    local out, rc = child:finish()
    assert.equal(0, rc)
    assert.equal("true\n", out)
  end)

  it("notifies up to n waiters and says how many it woke", function()
    local kids, pids = {}, {}
    for i = 1, 3 do
      kids[i] = H.spawn([[
        local shm = require "shm"
        local seg = assert(shm.attach(tonumber((...))))
        print("ready") io.stdout:flush()
        print(seg:wait(0, 0, 30))
      ]], { seg.id })
      pids[i] = kids[i].pid
      assert(kids[i]:line() == "ready")
    end
    -- all three asleep (after printing, the only place a child blocks is the futex)
    assert.is_true(H.until_true(function()
      for _, p in ipairs(pids) do if H.state(p) ~= "S" then return false end end
      return true
    end))
    assert.equal(1, seg:notify(0, 1))
    assert.equal(2, seg:notify(0))
    for i = 1, 3 do
      local out, rc = kids[i]:finish()
      assert.equal(0, rc)
      assert.equal("true\n", out)
    end
    assert.equal(0, seg:notify(0))
  end)
end)

describe("mutex", function()
  local seg
  before_each(function() seg = assert(shm.create(shm.PRIVATE, 4096)) end)
  after_each(function()
    if seg then
      collectgarbage() -- mutex objects unlock when collected
      seg:remove()
      seg:detach()
    end
    H.cleanup()
  end)

  it("locks, unlocks and trylocks", function()
    assert.equal(64, shm.MUTEX_SIZE)
    local m = seg:mutex(0)
    assert.is_true(m:lock())
    assert.error_matches(function() m:lock() end, "already locked by this process")
    assert.is_true(m:unlock())
    assert.error_matches(function() m:unlock() end, "does not hold")
    assert.is_true(m:trylock())
    local other = seg:mutex(0) -- the same mutex, another handle
    assert.error_matches(function() other:trylock() end, "already locked by this process")
    assert.is_true(m:unlock())
    assert.is_true(m:lock(0.1))
    m:unlock()
  end)

  it("rejects bad offsets and memory that holds something else", function()
    assert.error_matches(function() seg:mutex(4) end, "not 8%-byte aligned")
    assert.error_matches(function() seg:mutex(4096 - 32) end, "out of range")
    assert.error_matches(function() seg:mutex(-8) end, "out of range")
    seg:write("not a mutex, just data", 128)
    assert.error_matches(function() seg:mutex(128) end, "does not hold a lua%-shm mutex")
  end)

  it("refuses to detach while this process holds a mutex in the segment", function()
    local m = seg:mutex(0)
    m:lock()
    assert.error_matches(function() seg:detach() end, "holds 1 mutex")
    m:unlock()
    local s2 = assert(shm.attach(seg.id))
    local m2 = s2:mutex(0)
    assert.is_true(m2:lock())
    m2:unlock()
    assert.is_true(s2:detach())
    assert.error_matches(function() m2:lock() end, "detached")
  end)

  it("excludes other processes (read-modify-write under the lock)", function()
    local kids = {}
    for i = 1, 4 do
      kids[i] = H.spawn([[
        local shm = require "shm"
        local seg = assert(shm.attach(tonumber((...))))
        local m = seg:mutex(0)          -- racing first use initialises it once
        for _ = 1, 3000 do
          assert(m:lock())
          local v = seg:unpack(64, "j")   -- not atomic: only the lock protects it
          seg:pack(64, "j", v + 1)
          m:unlock()
        end
      ]], { seg.id })
    end
    for i = 1, 4 do
      local out, rc = kids[i]:finish()
      assert.equal(0, rc, out)
    end
    assert.equal(12000, seg:unpack(64, "j"))
  end)

  it("times out while another process holds it", function()
    local fifo = H.fifo()
    local child = H.spawn([[
      local shm = require "shm"
      local id, fifo = ...
      local seg = assert(shm.attach(tonumber(id)))
      local m = seg:mutex(0)
      m:lock()
      print("locked") io.stdout:flush()
      io.open(fifo):read("*l")
      m:unlock()
    ]], { seg.id, fifo })
    assert.equal("locked", child:line())
    local m = seg:mutex(0)
    local t0 = H.now()
    local ok, why = m:lock(0.05)
    assert.is_false(ok)
    assert.equal("timeout", why)
    assert.is_true(H.now() - t0 >= 0.05)
    local ok2, why2 = m:trylock()
    assert.is_false(ok2)
    assert.equal("busy", why2)
    H.release(fifo)
    assert.equal(0, select(2, child:finish()))
    assert.is_true(m:lock(5))
    m:unlock()
  end)

  it("recovers when its holder is killed: true, \"owner died\", then works again", function()
    local child = H.spawn([[
      local shm = require "shm"
      local seg = assert(shm.attach(tonumber((...))))
      local m = seg:mutex(0)
      m:lock()
      print("ready") io.stdout:flush()
      seg:wait(128, 0)                 -- hold it until killed
    ]], { seg.id })
    local pid = child.pid
    assert(child:line() == "ready")
    local m = seg:mutex(0)
    assert.same({ false, "busy" }, { m:trylock() })
    H.kill(pid, "KILL")
    child:finish()
    local ok, why = m:lock(5)
    assert.is_true(ok)
    assert.equal("owner died", why)
    assert.is_true(m:unlock())
    assert.same({ true }, { m:lock(5) })
    m:unlock()
  end)
end)
