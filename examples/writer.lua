-- writer.lua PATH: the writer half of make demo.  Attaches to the reader's
-- queue, sends each line of its standard input as a message, then "quit";
-- waits for the reader's acknowledgement, detaches and says so.
local shm = require "shm"

local path = assert(arg[1], "usage: writer.lua PATH")
local function say(fmt, ...) print(string.format("writer: " .. fmt, ...)) io.stdout:flush() end
local function check(v, msg) if not v then io.stderr:write("writer: ", msg, "\n") os.exit(1) end return v end

local q = check(shm.queue.open(check(shm.ftok(path, "Q"))))
local ctl = check(shm.open(check(shm.ftok(path, "C"))))
say("attached %s; nattch=%d", tostring(q), q:segment():stat().nattch)

for line in io.lines() do
  assert(q:push(line))
  say("sent %d bytes", #line)
end
assert(q:push("quit"))
say("sent quit")
ctl:wait(0, 0)                      -- until the reader has seen quit
q:detach()
say("detached")
ctl:store(8, 1):notify(8)
ctl:detach()
