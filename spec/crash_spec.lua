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
      print(io.open("/proc/self/stat"):read("*n")) io.stdout:flush()
      local big, i = string.rep("w", 1024 * 1024), 0
      while true do i = i + 1 seg:write(big, 0) seg:store(0, i) seg:notify(0) end
    ]], { key })
    local pid = tonumber(child:line())
    finally(function() H.kill(pid, "KILL") end)
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

  it("every message a killed writer committed is delivered, in order, exactly once", function()
    local key = H.key()
    local q = assert(shm.queue.create(key, 16384))
    local child = H.spawn([[
      local shm = require "shm"
      local q = assert(shm.queue.open(tonumber((...))))
      print(io.open("/proc/self/stat"):read("*n")) io.stdout:flush()
      local seq = 0
      while true do seq = seq + 1 q:push(string.format("%09d", seq) .. string.rep("p", seq % 500)) end
    ]], { key })
    local pid = tonumber(child:line())
    finally(function() H.kill(pid, "KILL") end)
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
