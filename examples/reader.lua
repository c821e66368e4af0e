-- reader.lua PATH [READY_FIFO]: the reader half of make demo.  Makes the message queue and
-- a small control segment (keys from shm.ftok(PATH, ...), mode 0600), blocks
-- in pop (no polling) and prints each message until "quit"; then removes both.
local shm = require "shm"

local path = assert(arg[1], "usage: reader.lua PATH")
local function say(fmt, ...) print(string.format("reader: " .. fmt, ...)) io.stdout:flush() end
local function check(v, msg)
  if v then return v end
  io.stderr:write("reader: ", msg, "\n")
  if arg[2] then -- never leave the starter blocked on the FIFO
    local f = io.open(arg[2], "w")
    if f then f:write("failed\n") f:close() end
  end
  os.exit(1)
end

local q = check(shm.queue.create(check(shm.ftok(path, "Q")), 4096))
local ctl = check(shm.create(check(shm.ftok(path, "C")), 64))
local seg = q:segment()
say("created %s", tostring(q))
say("nattch=%d, waiting for messages", seg:stat().nattch)
if arg[2] then -- tell whoever started us that the queue exists
  local f = assert(io.open(arg[2], "w"))
  f:write("ready\n")
  f:close()
end

while true do
  local msg, why = q:pop()          -- blocks in the kernel until a message comes
  if not msg then say("queue %s", why) break end
  if msg == "quit" then
    say("got quit; nattch=%d while the writer is attached", seg:stat().nattch)
    break
  end
  say("got %d bytes: %s", #msg, #msg > 40 and msg:sub(1, 37) .. "..." or msg)
end

ctl:store(0, 1):notify(0)           -- tell the writer we are done with it
ctl:wait(8, 0)                      -- and sleep until it has detached
say("writer gone; nattch=%d", seg:stat().nattch)
local st = q:stat()
say("%d pushed, %d popped, %d left", st.pushed, st.popped, st.count)
q:remove()
ctl:remove()
q:detach()
ctl:detach()
say("removed the queue and the control segment")
