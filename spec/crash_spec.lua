-- Processes killed with SIGKILL in the middle of their work: the survivors go on.
local shm = require "shm"
local H = require "helpers"

describe("killed processes", function()
  after_each(H.cleanup)

  it("a writer killed mid-write leaves the segment attached and usable by the others", function()
    local key = H.key()
    local seg = assert(shm.create(key, 1024 * 1024))
    local child = H.spawn([[
      local shm = require "shm"
      local seg = assert(shm.open(tonumber((...))))
      print("ready") io.stdout:flush()
      local big, i = string.rep("w", 1024 * 1024), 0
      while true do i = i + 1 seg:write(big, 0) seg:store(0, i) seg:notify(0) end
    ]], { key })
    local pid = child.pid
    finally(function() H.kill(pid, "KILL") end)
    assert(child:line() == "ready")
    assert.is_true(seg:wait(0, 0, 10))          -- it is writing
    assert.equal(2, seg:stat().nattch)
    H.kill(pid, "KILL")
    child:finish()
    assert.equal(1, seg:stat().nattch)            -- the kernel detached it
    seg:fill(0x61)                                -- and we carry on
    assert.equal(string.rep("a", 16), seg:read(100, 16))
    seg:remove()
    seg:detach()
  end)

  it("mutex holders and waiters killed at random: exclusion holds, the lock is taken over", function()
    -- each worker marks the critical section with its pid: whoever enters must
    -- find it empty, unless the lock says its owner died (then it holds the
    -- dead owner's pid); a violation exits 3.  Workers are killed with SIGKILL
    -- at random, holding the lock or sleeping on it, and replaced.
    local seg = assert(shm.create(shm.PRIVATE, 4096))
    local WORKER = [[
      local shm = require "shm"
      local seg = assert(shm.attach(tonumber((...))))
      local m = seg:mutex(0)
      local me = io.open("/proc/self/stat"):read("*n")
      print("ready") io.stdout:flush()
      while true do
        local ok, why = m:lock(30)
        if not ok then os.exit(2) end
        local inside = seg:load(64)
        if inside ~= 0 and why ~= "owner died" then os.exit(3) end
        if why == "owner died" then seg:add(80, 1) end
        seg:store(64, me)
        for _ = 1, 200 do seg:add(72, 1) end     -- work while holding it
        seg:store(64, 0)
        m:unlock()
      end
    ]]
    local kids, pids = {}, {}
    local function start(i)
      kids[i] = H.spawn(WORKER, { seg.id })
      pids[i] = kids[i].pid
      assert(kids[i]:line() == "ready")
    end
    finally(function() for i = 1, 3 do H.kill(pids[i], "KILL") end end)
    for i = 1, 3 do start(i) end
    local killed = 0
    for round = 1, 30 do
      local i = round % 3 + 1
      local before = seg:load(72)
      assert.is_true(H.until_true(function() return seg:load(72) > before end), "no progress")
      H.kill(pids[i], "KILL")
      local out, rc = kids[i]:finish()
      assert.equal(137, rc, "the worker ended by itself: " .. out) -- 128 + SIGKILL: it was working
      killed = killed + 1
      start(i)
    end
    for i = 1, 3 do
      H.kill(pids[i], "KILL")
      local out, rc = kids[i]:finish()
      assert.equal(137, rc, "the worker ended by itself: " .. out)
    end
    local m = seg:mutex(0)
    local ok = m:lock(5)
    assert.is_true(ok)
    m:unlock()
    assert.equal(30, killed)
    assert.is_true(seg:load(80) >= 1, "no takeover happened in 30 kills") -- the lock was held at some kill
    seg:remove()
    seg:detach()
  end)

  it("every message a killed writer committed is delivered, in order, exactly once", function()
    local key = H.key()
    local q = assert(shm.queue.create(key, 16384))
    local child = H.spawn([[
      local shm = require "shm"
      local q = assert(shm.queue.open(tonumber((...))))
      print("ready") io.stdout:flush()
      local seq = 0
      while true do seq = seq + 1 q:push(string.format("%09d", seq) .. string.rep("p", seq % 500)) end
    ]], { key })
    local pid = child.pid
    finally(function() H.kill(pid, "KILL") end)
    assert(child:line() == "ready")
    local expect = 1
    local function take(m)
      local seq = tonumber(m:sub(1, 9))
      assert.equal(expect, seq, "gap, duplicate or reordering")
      assert.equal(string.format("%09d", seq) .. string.rep("p", seq % 500), m)
      expect = expect + 1
    end
    while expect <= 3000 do take(assert(q:pop(10))) end
    H.kill(pid, "KILL")                           -- somewhere in its loop
    child:finish()
    while true do                                 -- the rest of what it committed
      local m = q:pop(0)
      if not m then break end
      take(m)
    end
    assert.equal(expect - 1, q:stat().popped)
    assert.equal(q:stat().pushed, q:stat().popped)
    q:remove()
    q:detach()
  end)
end)
