-- Item 3: round-trip latency, a 64-byte message there and back, COUNT times.
-- usage: pingpong.lua client queue|fifo COUNT   -> microseconds per round trip
local lib = require "lib"

local role, transport, count, a, b = arg[1], arg[2], tonumber(arg[3]), arg[4], arg[5]
local msgs = lib.messages(64)
local q = lib.q

local send, recv, finish
if transport == "queue" then
  local shm = require "shm"
  local qa, qb
  if role == "client" then
    local pid = io.open("/proc/self/stat"):read("*n")
    a, b = "/lshm-ping-" .. pid, "/lshm-pong-" .. pid
    qa, qb = assert(shm.queue.create(a, 4096)), assert(shm.queue.create(b, 4096))
    send, recv = function(m) qa:push(m) end, function() return qb:pop() end
    finish = function() qa:remove() qb:remove() end
  else
    qa, qb = assert(shm.queue.open(a)), assert(shm.queue.open(b))
    send, recv = function(m) qb:push(m) end, function() return qa:pop() end
  end
else
  if role == "client" then
    a, b = os.tmpname(), os.tmpname()
    os.remove(a) os.remove(b)
    assert(lib.exec("mkfifo -m 0600 " .. q(a) .. " " .. q(b)))
    finish = function() os.remove(a) os.remove(b) end
  end
end

if role == "client" then
  local cmd = table.concat({ arg[-1], q(arg[0]), "server", transport, count, q(a), q(b) }, " ")
  local server = assert(io.popen(cmd, "r"))
  if transport == "fifo" then
    local fa = assert(io.open(a, "wb"))
    local fb = assert(io.open(b, "rb"))
    send = function(m) fa:write(m) fa:flush() end
    recv = function() return fb:read(64) end
  end
  send(msgs[0]) assert(recv() == msgs[0]) -- the server is up
  local t0 = lib.now()
  for i = 1, count do
    send(msgs[i % 1024])
    if recv() ~= msgs[i % 1024] then error("bad echo " .. i) end
  end
  local t1 = lib.now()
  assert(server:close())
  finish()
  print(string.format("%.3f", (t1 - t0) * 1e6 / count))
else
  if transport == "fifo" then
    local fa = assert(io.open(a, "rb"))
    local fb = assert(io.open(b, "wb"))
    send = function(m) fb:write(m) fb:flush() end
    recv = function() return fa:read(64) end
  end
  for _ = 0, count do send(recv()) end
end
