-- shm.lock: lua-resty-lock's API over a shm.dict, between real processes:
-- exact counts under contention, a holder killed with kill -9 (the next one
-- takes over, "owner died", without waiting for exptime), unlock and expire
-- acting only on the caller's own token, the garbage collector and <close>
-- unlocking, and a storm of kills that never lets two holders in at once.
local shm = require "shm"
local H = require "helpers"

local newdict = H.dict

local OPEN = H.OPEN_DICT -- (children: the dict of arg[1] as d, say(...))

-- Wait for every child: their outputs, each checked to have exited 0.
local function finish_all(children)
  local outs = {}
  for i, c in ipairs(children) do
    local out, rc = c:finish()
    assert.are.equal(0, rc, "child " .. i .. ": " .. out)
    outs[i] = out
  end
  return outs
end

describe("shm.lock", function()
  after_each(H.cleanup)

  describe("in one process", function()
    local d
    before_each(function() d = newdict() end)
    after_each(function() d:remove() d:detach() end)

    it("takes, refuses and releases a lock as lua-resty-lock does", function()
      local a = shm.lock.new(d, { timeout = 0 })
      local b = shm.lock.new(d, { timeout = 0 })
      assert.equal(0, a:lock("k"))
      assert.same({ nil, "timeout" }, { b:lock("k") })
      assert.equal(true, a:unlock())
      assert.same({ nil, "unlocked" }, { a:unlock() })
      assert.equal(0, b:lock("k"))
      assert.equal(true, b:expire())
      assert.equal(true, b:expire(0.5))
      assert.equal(true, b:unlock())
      assert.is_nil(d:get("k"))
      assert.same({ nil, "unlocked" }, { b:expire() })
      -- two keys, two objects: independent
      assert.equal(0, a:lock("x"))
      assert.equal(0, b:lock("y"))
      assert.is_true(a:unlock() and b:unlock())
    end)

    it("refuses a second lock on one object (raises), and a nil key as resty.lock does", function()
      local a = shm.lock.new(d)
      assert.equal(0, a:lock("k"))
      assert.has_error(function() a:lock("other") end,
        'shm.lock: this lock object already holds "k" (unlock it first)')
      assert.equal(true, a:unlock())
      assert.same({ nil, "nil key" }, { a:lock(nil) })
      assert.same({ nil, "empty key" }, { a:lock("") })
      assert.equal(0, a:lock(42)) -- numbers are converted, as the dict does
      assert.is_string(d:get("42"))
      assert.equal(true, a:unlock())
    end)

    it("checks its arguments", function()
      assert.has_error(function() shm.lock.new(nil) end, "bad argument #1 to 'new' (shm.dict expected, got nil)")
      assert.has_error(function() shm.lock.new(d:segment()) end)
      assert.has_error(function() shm.lock.new(d, 5) end, "bad argument #2 to 'new' (table expected, got number)")
      assert.has_error(function() shm.lock.new(d, { timeout = -1 }) end)
      assert.has_error(function() shm.lock.new(d, { exptime = "x" }) end)
      assert.has_error(function() shm.lock.new(d, { step = 0 / 0 }) end)
      local a = shm.lock.new(d, { step = 0.001, ratio = 2, max_step = 0.5 }) -- resty.lock's, accepted
      assert.has_error(function() a.lock({}, "k") end, "bad argument #1 to 'lock' (shm.lock expected, got table)")
      assert.has_error(function() a.unlock("x") end)
      assert.has_error(function() a:expire(-1) end)
      assert.has_error(function() a:expire("x") end)
      assert.equal("shm.lock", getmetatable(a))
      -- shm.lock:new(dict, opts), as resty.lock's lock:new(name, opts)
      local b = shm.lock:new(d, { timeout = 0 })
      assert.equal(0, b:lock("k"))
      assert.equal('shm.lock("k" held)', tostring(b))
      assert.equal(true, b:unlock())
      assert.equal("shm.lock(unlocked)", tostring(b))
    end)

    it("raises on a detached dict", function()
      local d2 = newdict()
      local a = shm.lock.new(d2)
      d2:remove() d2:detach()
      assert.has_error(function() a:lock("k") end)
    end)

    it("never frees a lock another holder took after an expiry", function()
      local a = shm.lock.new(d, { exptime = 0.05, timeout = 0 })
      local b = shm.lock.new(d, { timeout = 0 })
      assert.equal(0, a:lock("k"))
      assert.is_true(H.until_true(function() return d:get("k") == nil end))
      assert.equal(0, b:lock("k"))
      local token = d:get("k")
      assert.same({ nil, "unlocked" }, { a:unlock() })
      assert.equal(token, d:get("k"))
      assert.same({ nil, "unlocked" }, { a:expire(10) })
      assert.equal(token, d:get("k"))
      assert.equal(true, b:unlock())
      -- an expired lock nobody took: unlock says so, and the object is free again
      assert.equal(0, a:lock("k"))
      assert.is_true(H.until_true(function() return d:get("k") == nil end))
      assert.same({ nil, "unlocked" }, { a:unlock() })
      assert.equal(0, a:lock("k"))
      assert.equal(true, a:unlock())
    end)

    it("takes over a dead holder's lock at once, and waits out other values until they expire", function()
      local dead = tonumber((H.run([[io.write(io.open("/proc/self/stat"):read("*n"))]])))
      local a = shm.lock.new(d, { timeout = 5, exptime = 600 })
      for _, holder in ipairs({
        "shm.lock " .. dead .. " 12345 0x1 1",   -- a process that exited
        "shm.lock 1 1 0x1 1",                    -- init with another start time: a reused pid
        "shm.lock 0 0 x 1",                      -- nobody
        "shm.lock 99999999999999 1 x 1",         -- out of range: nobody
      }) do
        assert(d:set("k", holder, 600))
        local elapsed, err = a:lock("k")
        assert.is_number(elapsed, holder)
        assert.equal("owner died", err, holder)
        assert.equal(true, a:unlock())
      end
      -- a value that names no holder (resty.lock's `true`): a live holder until it expires
      local b = shm.lock.new(d, { timeout = 0.05 })
      assert(d:set("k", true, 600))
      assert.same({ nil, "timeout" }, { b:lock("k") })
      assert(d:set("k", true, 0.02))
      assert.is_number((b:lock("k")))
      assert.equal(true, b:unlock())
      -- a live process (this one, through another object): timeout
      assert(d:set("k", string.format("shm.lock %d %d 0x1 1", require("shm.core")._self()), 600))
      assert.same({ nil, "timeout" }, { b:lock("k") })
      d:delete("k")
    end)

    it("is unlocked by the garbage collector when forgotten, and by <close> on 5.4", function()
      local b = shm.lock.new(d, { timeout = 0 })
      do
        local a = shm.lock.new(d)
        assert.equal(0, a:lock("k"))
        assert.same({ nil, "timeout" }, { b:lock("k") })
      end
      collectgarbage() collectgarbage()
      assert.is_nil(d:get("k"))
      assert.equal(0, b:lock("k"))
      assert.equal(true, b:unlock())
      if H.lua54 then
        H.load([[
          local shm, d = ...
          do
            local a <close> = shm.lock.new(d)
            assert(a:lock("c") == 0)
            assert(d:get("c"))
          end
          assert(d:get("c") == nil)
        ]])(shm, d)
      end
      -- a finalizer on a detached dict does not raise
      local d2 = newdict()
      do
        local a = shm.lock.new(d2)
        a:lock("k")
      end
      d2:remove() d2:detach()
      collectgarbage() collectgarbage()
    end)

    it("holds 10^4 locks at once and takes 10^5 in turn", function()
      local big = newdict(16 * 1024 * 1024)
      finally(function() big:remove() big:detach() end)
      local held = {}
      for i = 1, 10000 do
        held[i] = shm.lock.new(big, { timeout = 0 })
        assert.equal(0, held[i]:lock("k" .. i))
      end
      assert.equal(10000, big:stat().count)
      local other = shm.lock.new(big, { timeout = 0 })
      assert.same({ nil, "timeout" }, { other:lock("k777") })
      for i = 1, 10000 do assert.equal(true, held[i]:unlock()) end
      assert.equal(0, big:stat().count)
      local lk = shm.lock.new(big, { timeout = 0 })
      for i = 1, H.valgrind and 10000 or 100000 do -- (10^4 under valgrind: ~50x slower there)
        lk:lock("r" .. i % 1000)
        lk:unlock()
      end
      assert.equal(0, big:stat().count)
    end)
  end)

  -- lua-resty-lock's own test cases (t/sanity.t), with `lock:new("cache_locks", opts)`
  -- changed to `lock:new(cache_locks, opts)`: the dict object instead of its name.
  -- Its unlock returns 1 where this one returns true; the output is otherwise its own.
  describe("lua-resty-lock's cases", function()
    local cache_locks, out
    local function say(...)
      local t = { ... }
      for i = 1, select("#", ...) do t[i] = tostring(t[i]) end
      out[#out + 1] = table.concat(t)
    end
    before_each(function() cache_locks, out = newdict(100 * 1024), {} end)
    after_each(function() cache_locks:remove() cache_locks:detach() end)

    it("TEST 1: lock is subject to garbage collection", function()
      local lock = require "shm.lock"
      for _ = 1, 2 do
        collectgarbage("collect")
        local lk = lock:new(cache_locks)
        local elapsed, err = lk:lock("foo")
        say("lock: ", elapsed, ", ", err)
      end
      collectgarbage("collect")
      assert.same({ "lock: 0, nil", "lock: 0, nil" }, out)
    end)

    it("TEST 2: serial lock and unlock", function()
      local lock = require "shm.lock"
      for _ = 1, 2 do
        local lk = lock:new(cache_locks)
        local elapsed, err = lk:lock("foo")
        say("lock: ", elapsed, ", ", err)
        local ok, err2 = lk:unlock()
        if not ok then say("failed to unlock: ", err2) end
        say("unlock: ", ok)
      end
      assert.same({ "lock: 0, nil", "unlock: true", "lock: 0, nil", "unlock: true" }, out)
    end)

    for _, t in ipairs({ { 3, "timed out locks", 0.01 }, { 13, "timed out locks (0 timeout)", 0 } }) do
      it("TEST " .. t[1] .. ": " .. t[2], function()
        local lock = require "shm.lock"
        for _ = 1, 2 do
          local lock1 = lock:new(cache_locks, { timeout = t[3] })
          local lock2 = lock:new(cache_locks, { timeout = t[3] })
          local elapsed, err = lock1:lock("foo")
          say("lock 1: lock: ", elapsed, ", ", err)
          elapsed, err = lock2:lock("foo")
          say("lock 2: lock: ", elapsed, ", ", err)
          local ok
          ok, err = lock1:unlock()
          say("lock 1: unlock: ", ok, ", ", err)
          ok, err = lock2:unlock()
          say("lock 2: unlock: ", ok, ", ", err)
        end
        local once = { "lock 1: lock: 0, nil", "lock 2: lock: nil, timeout",
                       "lock 1: unlock: true, nil", "lock 2: unlock: nil, unlocked" }
        assert.same({ once[1], once[2], once[3], once[4], once[1], once[2], once[3], once[4] }, out)
      end)
    end

    it("TEST 8 and 14: lock expired by itself (per object, per key)", function()
      local resty_lock = require "shm.lock"
      local key = "blah"
      for _, per_key in ipairs({ false, true }) do
        local sub = per_key and resty_lock:new(cache_locks) or resty_lock:new(cache_locks, { exptime = 0.1 })
        local elapsed, err = sub:lock(key, per_key and 0.1 or nil)
        say("sub thread: lock: ", elapsed, " ", err)
        local main = resty_lock:new(cache_locks, { max_step = 0.05 })
        elapsed, err = main:lock(key)
        say("main thread: lock: ", type(elapsed), " ", err)
        say("main thread: unlock: ", main:unlock())
      end
      local once = { "sub thread: lock: 0 nil", "main thread: lock: number nil", "main thread: unlock: true" }
      assert.same({ once[1], once[2], once[3], once[1], once[2], once[3] }, out)
    end)

    it("TEST 11: lock on a nil key", function()
      local lock = require "shm.lock"
      local lk = lock:new(cache_locks)
      local elapsed, err = lk:lock(nil)
      if elapsed then say("lock: ", elapsed, ", ", err) else say("failed to lock: ", err) end
      assert.same({ "failed to lock: nil key" }, out)
    end)

    it("TEST 12: same shdict, multiple locks", function()
      local lock = require "shm.lock"
      local lock1 = lock:new(cache_locks, { timeout = 0.01 })
      for _ = 1, 3 do
        lock1:lock("lock_key")
        lock1:unlock()
        collectgarbage("collect")
      end
      local lock2 = lock:new(cache_locks, { timeout = 0.01 })
      local lock3 = lock:new(cache_locks, { timeout = 0.01 })
      assert.equal(0, lock2:lock("lock_key"))
      assert.same({ nil, "timeout" }, { lock3:lock("lock_key") })
      collectgarbage("collect")
      assert.equal(true, lock2:unlock())
      assert.same({ nil, "unlocked" }, { lock3:unlock() })
    end)
  end)

  it("counts exactly: 8 processes x 1000 increments of a table field", function()
    local d, key = newdict()
    finally(function() d:remove() d:detach() end)
    assert(d:set("tbl", { n = 0, note = "a table" }))
    local children = {}
    for i = 1, 8 do
      children[i] = H.spawn(OPEN .. [[
        local lk = shm.lock.new(d, { timeout = 120 })
        for _ = 1, 1000 do
          assert(lk:lock("counter"))
          local t = d:get("tbl")
          t.n = t.n + 1
          assert(d:set("tbl", t))
          assert(lk:unlock())
        end
        say("done")
      ]], { key })
    end
    local outs = finish_all(children)
    for i = 1, 8 do assert.equal("done\n", outs[i]) end
    assert.same({ n = 8000, note = "a table" }, d:get("tbl"))
    assert.is_nil(d:get("counter"))
  end)

  it("d:cas between 8 processes loses no update (a table read-modify-write without a lock)", function()
    local d, key = newdict()
    finally(function() d:remove() d:detach() end)
    assert(d:set("tbl", { n = 0, by = {} }))
    local children = {}
    for i = 1, 8 do
      children[i] = H.spawn(OPEN .. [[
        local me, retries = arg[2], 0
        for _ = 1, 1000 do
          while true do
            local v = d:get("tbl")
            local new = { n = v.n + 1, by = {} }
            for k, c in pairs(v.by) do new.by[k] = c end
            new.by[me] = (new.by[me] or 0) + 1
            local ok, err = d:cas("tbl", new, 0, 0, v, 0)
            if ok then break end
            assert(err == "changed", err)
            retries = retries + 1
          end
        end
        say("done", retries)
      ]], { key, "p" .. i })
    end
    local retries = 0
    for _, out in ipairs(finish_all(children)) do
      local r = out:match("^done\t(%d+)\n$")
      assert.truthy(r, out)
      retries = retries + tonumber(r)
    end
    local v = d:get("tbl")
    assert.equal(8000, v.n)
    for i = 1, 8 do assert.equal(1000, v.by["p" .. i]) end
    print(string.format("\n    cas: 8 x 1000 updates, %d retries after a lost race", retries))
  end)

  it("wakes a waiter when the holder unlocks, and hands a killed holder's lock to the next (owner died)", function()
    local d, key = newdict()
    finally(function() d:remove() d:detach() end)
    local fifo = H.fifo()
    -- a holder that waits for a line, then unlocks
    local holder = H.spawn(OPEN .. [[
      local lk = shm.lock.new(d)
      assert(lk:lock("k") == 0)
      say("locked")
      io.open(arg[2]):read("*l")
      assert(lk:unlock())
      say("unlocked")
    ]], { key, fifo })
    assert.equal("locked", holder:line())
    local waiter = H.spawn(OPEN .. [[
      local lk = shm.lock.new(d, { timeout = 60, exptime = 600 })
      say("waiting")
      local elapsed, err = lk:lock("k")
      say(type(elapsed), tostring(err))
      lk:unlock()
    ]], { key })
    assert.equal("waiting", waiter:line())
    H.release(fifo)
    assert.equal("number\tnil\n", (waiter:finish()))
    assert.equal("unlocked\n", (holder:finish()))

    -- now a holder killed with kill -9 while three wait (exptime 600: no expiry helps)
    local victim = H.spawn(OPEN .. [[
      local lk = shm.lock.new(d, { exptime = 600 })
      assert(lk:lock("k") == 0)
      say("locked")
      io.open(arg[2]):read("*l")
    ]], { key, fifo })
    assert.equal("locked", victim:line())
    local waiters = {}
    for i = 1, 3 do
      waiters[i] = H.spawn(OPEN .. [[
        local lk = shm.lock.new(d, { timeout = 60, exptime = 600 })
        say("waiting")
        local elapsed, err = lk:lock("k")
        say(type(elapsed), tostring(err))
        assert(lk:unlock())
      ]], { key })
      assert.equal("waiting", waiters[i]:line())
    end
    H.kill(victim.pid)
    victim:finish()
    local died, clean = 0, 0
    for _, out in ipairs(finish_all(waiters)) do
      if out == "number\towner died\n" then died = died + 1
      elseif out == "number\tnil\n" then clean = clean + 1 end
    end
    assert.same({ 1, 2 }, { died, clean })
    assert.is_nil(d:get("k"))
  end)

  it("survives a storm of kill -9: never two holders at once, never a lock left stuck #storm", function()
    local d, key = newdict()
    finally(function() d:remove() d:detach() end)
    -- each worker, holding the lock, writes its pid as the owner, works a
    -- little, and checks that the owner is still itself
    local WORKER = OPEN .. [[
      local lk = shm.lock.new(d, { timeout = 120, exptime = 600 })
      local me = tostring(io.open("/proc/self/stat"):read("*n"))
      say("ready")
      while true do
        local _, died = assert(lk:lock("storm"))
        if died then d:incr("takeovers", 1, 0) end
        d:set("owner", me)
        for _ = 1, 20 do d:incr("work", 1, 0) end
        if d:get("owner") ~= me then say("VIOLATION " .. tostring(d:get("owner"))) os.exit(1) end
        d:incr("rounds", 1, 0)
        assert(lk:unlock())
      end
    ]]
    local kills = 40
    H.kill_storm(WORKER, { key }, 4, kills, function(out)
      assert.is_nil(out:find("VIOLATION", 1, true), out)
    end)
    assert.is_true((d:get("rounds") or 0) > 0)
    print(string.format("\n    lock storm: %d kills, %d rounds, %d takeovers from a dead holder",
      kills, d:get("rounds"), d:get("takeovers") or 0))
    -- the lock is free, or held by a dead worker: taken at once (timeout far below exptime)
    local lk = shm.lock.new(d, { timeout = 30, exptime = 600 })
    assert.is_number((lk:lock("storm")))
    assert.equal(true, lk:unlock())
  end)
end)
