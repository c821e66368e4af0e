-- Item 3: SIZE-byte messages from a writer process to a reader process.
-- The same script for every transport:
--   queue          shm.queue (blocking push/pop)
--   fifo-flush     a FIFO, f:write(msg) f:flush() per message
--   fifo-buffered  a FIFO, stdio buffering, one flush at the end
-- usage: msg.lua read TRANSPORT SIZE COUNT   -> messages per second
--        (the reader makes the channel and starts the writer itself)
local lib = require "lib"

local role, transport, size, count, name = arg[1], arg[2], tonumber(arg[3]), tonumber(arg[4]), arg[5]
local msgs = lib.messages(size)

local q = lib.q
local function start_writer(channel)
  local cmd = table.concat({ arg[-1], q(arg[0]), "write", transport, size, count, q(channel) }, " ")
  return assert(io.popen(cmd, "r"))
end

if transport == "queue" then
  local shm = require "shm"
  if role == "write" then
    local qu = assert(shm.queue.open(name))
    local push = qu.push
    for i = 1, count do push(qu, msgs[i % 1024]) end
    qu:close()
  else
    name = string.format("/lshm-bench-%d", io.open("/proc/self/stat"):read("*n"))
    local qu = assert(shm.queue.create(name, 256 * 1024))
    local w = start_writer(name)
    local pop = qu.pop
    local t0
    for i = 1, count do
      local m = pop(qu)
      if m ~= msgs[i % 1024] then error("message " .. i .. " lost, torn or out of order") end
      if i == 1 then
        t0 = lib.now()
        qu:remove() -- the writer has attached: the name can go
      end
    end
    local t1 = lib.now()
    assert(select(2, qu:pop()) == "closed")
    assert(w:close())
    print(string.format("%.1f", (count - 1) / (t1 - t0)))
  end
else
  local flush = transport == "fifo-flush"
  if role == "write" then
    local f = assert(io.open(name, "wb"))
    for i = 1, count do
      f:write(msgs[i % 1024])
      if flush then f:flush() end
    end
    f:close()
  else
    name = os.tmpname()
    os.remove(name)
    assert(lib.exec("mkfifo -m 0600 " .. q(name)))
    local w = start_writer(name)
    local f = assert(io.open(name, "rb"))
    os.remove(name)
    local t0
    for i = 1, count do
      local m = f:read(size)
      if m ~= msgs[i % 1024] then error("message " .. i .. " lost, torn or out of order") end
      if i == 1 then t0 = lib.now() end
    end
    local t1 = lib.now()
    assert(f:read(1) == nil)
    f:close()
    assert(w:close())
    print(string.format("%.1f", (count - 1) / (t1 - t0)))
  end
end
