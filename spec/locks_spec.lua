-- The robust lock (lock.c) under seg:mutex and the queue's writers' lock:
-- whatever bytes a peer writes over a lock, the cost is a timeout or a
-- takeover ("owner died"), never a signal, and never a wait without a bound.
-- Each case runs in a child process under `timeout`, so that a crash shows as
-- a signal in its exit status and a hang as timeout's 124.
local shm = require "shm"
local H = require "helpers"

-- Lua source for the children: the words of the lock protocol, built with
-- pack (no bit operators: the children may be Lua 5.1).
local PRELUDE = [[
local shm = require "shm"
-- fields 3... of /proc/PID/stat (after the command name)
local function stat(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  local s = f:read("*a") f:close()
  local t = {}
  for w in s:match("%) (.*)$"):gmatch("%S+") do t[#t + 1] = w end
  return t
end
local function tag(pid) -- the low 32 bits of the start time, never 0
  local t = tonumber(stat(pid)[20]) % 2 ^ 32
  return t == 0 and 1 or t
end
local mypid = io.open("/proc/self/stat"):read("*n")
-- write a lock word: pid (bits 0-29) | flags (bits 30, 31) and the tag
local function setlock(seg, off, pid, tagv, flags)
  seg:pack(off, "<I4I4", pid + (flags or 0), tagv or 0)
end
local function show(...)
  local t = { ... }
  for i = 1, select("#", ...) do t[i] = tostring(t[i]) end
  print(table.concat(t, " "))
end
]]

-- Run `code` (after PRELUDE) in a child bounded to 20 s: its output.
local function child(code, args)
  local out, rc = H.run(PRELUDE .. code, args, { interpreter = "timeout 20 " .. H.lua })
  assert.are.equal(0, rc, "child exited with " .. tostring(rc) .. ": " .. out)
  return out
end

local function splitlines(s)
  local t = {}
  for l in s:gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

-- The pid of a process that has exited (and been reaped).
local function deadpid()
  local out = H.run([[io.write(io.open("/proc/self/stat"):read("*n"))]])
  return tonumber(out)
end

describe("seg:mutex on the robust lock", function()
  after_each(H.cleanup)

  it("counts a hold on the object that locked (issue 12 item 2)", function()
    local out = child([[
      local s1 = shm.create(shm.PRIVATE, 4096); s1:remove(); local s2 = shm.attach(s1.id)
      local s3 = shm.create(shm.PRIVATE, 4096); s3:remove()
      local a, b2, b1 = s1:mutex(0), s2:mutex(64), s1:mutex(64)
      a:lock(); b2:lock()
      show(pcall(b1.unlock, b1))          -- b1 did not lock it
      show(pcall(s1.detach, s1))          -- a, locked through s1, is held
      show(s3:mutex(0):lock())
      show(pcall(s2.detach, s2))          -- b2 is held through s2
      show(b2:unlock(), s2:detach())      -- then s2 can go
      show(a:unlock(), s1:detach())
    ]])
    assert.equal(table.concat({
      "false attempt to unlock a mutex this process does not hold",
      "false cannot detach: this process holds 1 mutex(es) in the segment (unlock first)",
      "true",
      "false cannot detach: this process holds 1 mutex(es) in the segment (unlock first)",
      "true true",
      "true true", "" }, "\n"), out)
  end)

  it("unlocks when collected or closed, and refuses to unlock what another object holds", function()
    local out = child([[
      local seg = shm.create(shm.PRIVATE, 4096); seg:remove()
      local m = seg:mutex(0)
      m:lock()
      local other = seg:mutex(0)
      show(pcall(other.unlock, other))
      show(pcall(other.lock, other, 0))   -- the same memory, held by this process
      m = nil
      collectgarbage() collectgarbage()   -- __gc unlocks
      show(other:trylock())
      show(other:unlock(), seg:detach())
    ]])
    assert.matches("^false [^\n]*attempt to unlock a mutex this process does not hold\n"
      .. "false [^\n]*already locked by this process\ntrue\ntrue true\n$", out)
  end)

  it("takes over a lock word naming nobody alive: true, \"owner died\"", function()
    local dead = deadpid()
    local out = child([[
      local dead = tonumber((...))
      local seg = shm.create(shm.PRIVATE, 4096); seg:remove()
      local m = seg:mutex(0)
      local cases = {
        { "our pid, another start time", mypid, 0 },
        { "a dead pid", dead, 7 },
        { "a pid above pid_max", 0x3fffff00, 16 + 32 + 128 + 2 },
        { "a live pid, another start time", 1, tag(1) + 1 },
        { "a live pid, no tag", 1, 0 },
        { "pid 0 with the waiters bit", 0, 5, 2 ^ 31 },
        { "pid 0 with bit 30", 0, 0, 2 ^ 30 },
        { "all ones", 0x3fffffff, 2 ^ 32 - 1, 2 ^ 31 + 2 ^ 30 },
      }
      for _, c in ipairs(cases) do
        setlock(seg, 8, c[2], c[3], c[4])
        show(c[1], m:lock(5))
        show(m:unlock())
        setlock(seg, 8, c[2], c[3], c[4])
        show(c[1], m:trylock())
        show(m:unlock())
      end
    ]], { dead })
    local n = 0
    for line in out:gmatch("[^\n]+") do
      n = n + 1
      if n % 2 == 1 then assert.matches(" true owner died$", line) else assert.equal("true", line) end
    end
    assert.equal(32, n, out)
  end)

  it("waits for a lock word naming a live process: a timeout, or busy", function()
    local out = child([[
      local seg = shm.create(shm.PRIVATE, 4096); seg:remove()
      local m = seg:mutex(0)
      setlock(seg, 8, 1, tag(1))                   -- held by init, as far as anyone can tell
      show(m:lock(0.05))
      show(m:trylock())
      setlock(seg, 8, 1, tag(1), 2 ^ 31)           -- with waiters
      show(m:lock(0))
      setlock(seg, 8, mypid, tag(mypid))           -- this very process
      show(pcall(m.lock, m, 0))
      show(pcall(m.unlock, m))
      seg:store(8, 0)
      show(m:lock(0))
      show(m:unlock())
    ]])
    local lines = splitlines(out)
    assert.equal("false timeout", lines[1])
    assert.equal("false busy", lines[2])
    assert.equal("false timeout", lines[3])
    assert.matches("^false .*already locked by this process$", lines[4])
    assert.matches("^false .*attempt to unlock a mutex this process does not hold$", lines[5])
    assert.equal("true", lines[6])
    assert.equal("true", lines[7])
  end)

  it("survives scribbles over a held mutex (issue 12 item 3)", function()
    local out = child([[
      local seg = shm.create(shm.PRIVATE, 4096); seg:remove()
      local m = seg:mutex(0)
      -- the issue's first reproducer: the lock word names the creator (us)
      seg:pack(8, "<i4", seg:stat().cpid)
      show(pcall(m.unlock, m))
      show(m:lock(1))                              -- no tag: a previous process
      -- zeros over the state and lock words of a held mutex
      seg:fill(0, 0, 40)
      show(pcall(m.unlock, m))                     -- not held any more: says so
      show(pcall(m.lock, m, 0))                    -- the state word is gone
      local m1 = seg:mutex(0)                      -- initialised again, and free
      show(m1:lock(0))
      m1:unlock()
      -- garbage in the state word
      seg:write("not a mutex, just data", 64)
      show(pcall(seg.mutex, seg, 64))
      local m2 = seg:mutex(128)
      m2:lock()
      seg:write("scribble", 128)                   -- the state word only
      show(pcall(m2.unlock, m2))                   -- the lock word is ours still
      show(pcall(m2.lock, m2, 0))
      local m3 = seg:mutex(192)
      m3:lock()
      seg:fill(0x41, 192, 16)                      -- both words
      show(pcall(m3.unlock, m3))
      show(seg:detach())                           -- nothing held any more
    ]])
    local lines = splitlines(out)
    assert.matches("^false .*does not hold$", lines[1])
    assert.equal("true owner died", lines[2])
    assert.matches("^false .*the mutex at offset 0 was overwritten while held$", lines[3])
    assert.matches("^false .*the mutex at offset 0 was overwritten$", lines[4])
    assert.equal("true", lines[5])
    assert.matches("^false .*offset 64 does not hold a lua%-shm mutex", lines[6])
    assert.equal("true true", lines[7])
    assert.matches("^false .*the mutex at offset 128 was overwritten$", lines[8])
    assert.matches("^false .*the mutex at offset 192 was overwritten while held$", lines[9])
    assert.equal("true", lines[10])
    assert.equal(10, #lines)
  end)

  it("never hangs in initialisation, whatever the state word says (issue 12 item 4)", function()
    local out = child([[
      local seg = shm.create(shm.PRIVATE, 4096); seg:remove()
      -- the old "being initialised by pid" marker: "LSHM" << 32 | pid
      seg:pack(0, "<I4c4", 1, "MHSL")
      show(pcall(seg.mutex, seg, 0))
      seg:pack(0, "<I4c4", mypid, "MHSL")
      show(pcall(seg.mutex, seg, 0))
      local q = shm.queue.create(shm.PRIVATE, 64); q:remove(); local qs = q:segment()
      qs:mutex(24); q:close(); show(pcall(qs.mutex, qs, 24))
      q:detach()
    ]])
    local n = 0
    for line in out:gmatch("[^\n]+") do
      n = n + 1
      assert.matches("^false .*does not hold a lua%-shm mutex", line)
    end
    assert.equal(3, n)
  end)
end)

describe("the queue's writers' lock", function()
  after_each(H.cleanup)

  it("gives one shape for a scribbled lock: a timeout, or a takeover that repairs", function()
    local dead = deadpid()
    local out = child([[
      local dead = tonumber((...))
      local q = shm.queue.create(shm.PRIVATE, 256); q:remove()
      local seg, L = q:segment(), shm.queue.layout.lock
      setlock(seg, L, 1, tag(1))                   -- a live holder: timeouts
      show(q:push("x", 0.02))
      show(q:stat(0))
      show(q:close(0))
      show(q:pop(0))                               -- readers take no lock
      setlock(seg, L, dead, 3)                     -- a dead holder: taken over
      show(q:push("y", 1))
      show(q:stat(1).recovered)
      setlock(seg, L, 0x3fffff00, 16 + 32 + 128 + 2)  -- the issue's bytes
      show(q:push("z", 1))
      setlock(seg, L, 0, 9, 2 ^ 31)                -- garbage naming nobody
      show(q:close(1))
      local st = q:stat(1)
      show(st.recovered, st.count, st.closed)
      show(q:pop(0), q:pop(0), q:pop(0))
      q:detach()
    ]], { dead })
    assert.equal(table.concat({ "false timeout", "nil timeout", "false timeout", "nil timeout",
      "true", "1", "true", "true", "3 2 true", "y z nil closed", "" }, "\n"), out)
  end)

  it("lets a create-or-open wait for a live initialiser and take over from a dead one", function()
    local key = H.key()
    local seg = assert(shm.create(key, shm.queue.layout.header + 64))
    local holder = H.spawn(PRELUDE .. [[
      local seg = assert(shm.open(tonumber((...))))
      setlock(seg, shm.queue.layout.lock, mypid, tag(mypid)) -- "initialising"
      print("ready") io.stdout:flush()
      seg:wait(seg.size - 8, 0)                              -- until killed
    ]], { key })
    local hpid = holder.pid
    finally(function() H.kill(hpid, "KILL") end)
    assert(holder:line() == "ready")
    local opener = H.spawn([[
      local shm = require "shm"
      print("ready") io.stdout:flush()
      local q = assert(shm.queue.open(tonumber((...)), 64))
      print(q:push("made"), q:stat().capacity)
    ]], { key })
    local opid = opener.pid
    assert(opener:line() == "ready")
    -- it sleeps on the lock (in slices) while the holder lives
    assert.is_true(H.until_true(function() return H.state(opid) == "S" end))
    seg:wait(seg.size - 8, 0, 0.1)
    assert.is_truthy(H.state(opid), "the opener is still waiting")
    assert.equal(0, seg:load(shm.queue.layout.magic), "nothing initialised while the holder lives")
    H.kill(hpid, "KILL")
    holder:finish()
    local out, rc = opener:finish()
    assert.equal(0, rc, out)
    assert.equal("true\t64\n", out)
    local q = assert(shm.queue.open(key))
    assert.equal("made", q:pop(0))
    q:detach()
    seg:remove()
    seg:detach()
  end)
end)
