-- guard.lua PATH holder|waiter: the semaphore half of make demo.  Two processes
-- guard a segment with a System V semaphore used as a lock (value 1, undo =
-- true: the kernel gives a dead holder's unit back).  The holder takes it,
-- writes its pid into the segment and never lets go; the waiter blocks in
-- acquire until the holder is killed (kill -9), then finds the lock free.
local shm = require "shm"

local path, role = arg[1], arg[2]
local function say(fmt, ...) print(string.format("guard " .. role .. ": " .. fmt, ...)) io.stdout:flush() end
local key = assert(shm.ftok(path, "S"))
local lock = assert(shm.sem.open(key))   -- made by demo.lua with value 1
local seg = assert(shm.open(key))        -- (segments and semaphores: separate key spaces)
lock.undo = true                          -- a lock: a holder that dies gives its unit back

if role == "holder" then
  assert(lock:acquire(10))
  local f = assert(io.open("/proc/self/stat"))
  local pid = f:read("*n")
  f:close()
  seg:write("held by " .. pid .. "\0")
  seg:store(56, pid)
  seg:notify(56)
  say("pid %d holds the lock, and will be killed holding it", pid)
  io.read("*a")                           -- until killed (demo.lua keeps our stdin open)
else
  say("waiting for the lock (value %d)", lock.value)
  local ok, why = lock:acquire(10)
  if not ok then say("no lock: %s", tostring(why)) os.exit(1) end
  say("got the lock; the segment says %q; value now %d", seg:read(0, 32):match("^[^%z]*"), lock.value)
  seg:write("held by the waiter\0")
  assert(lock:release())
end
