-- Semaphores: lua-shm's shm.sem beside C (bench/csem.c) and Python's sysv_ipc.
-- usage: sem.lua uncontended sysv|posix COUNT  -> nanoseconds per acquire+release pair
--        sem.lua pingpong sysv|posix COUNT     -> nanoseconds per round trip: this process
--          releases "ping" and acquires "pong", a second process the reverse
--        (sem.lua pong KIND COUNT PING PONG: that second process)
local shm = require "shm"
local lib = require "lib"

local mode, kind, count = arg[1], arg[2], tonumber(arg[3])
local pid = io.open("/proc/self/stat"):read("*n")
local function obj(tag)
  if kind == "posix" then return "/lshm-bench-" .. tag .. "-" .. pid end
  return 0x4c530000 + (pid % 0x4000) * 4 + (tag == "ping" and 1 or tag == "pong" and 2 or 3)
end

if mode == "uncontended" then
  local s = assert(shm.sem.create(obj("u"), 1))
  local t0 = lib.now()
  for _ = 1, count do
    s:acquire()
    s:release()
  end
  local t1 = lib.now()
  s:remove()
  print(string.format("%.1f", (t1 - t0) * 1e9 / count))
elseif mode == "pingpong" then
  local a, b = obj("ping"), obj("pong")
  local ping, pong = assert(shm.sem.create(a, 0)), assert(shm.sem.create(b, 0))
  local peer = assert(io.popen(table.concat({ arg[-1], lib.q(arg[0]), "pong", kind, count, lib.q(a), lib.q(b) },
    " "), "r"))
  assert(pong:acquire(30)) -- the peer is ready
  local t0 = lib.now()
  for _ = 1, count do
    ping:release()
    pong:acquire()
  end
  local t1 = lib.now()
  peer:close()
  ping:remove()
  pong:remove()
  print(string.format("%.1f", (t1 - t0) * 1e9 / count))
else -- pong
  local a, b = tonumber(arg[4]) or arg[4], tonumber(arg[5]) or arg[5]
  local ping, pong = assert(shm.sem.open(a)), assert(shm.sem.open(b))
  pong:release()
  for _ = 1, count do
    ping:acquire()
    pong:release()
  end
end
