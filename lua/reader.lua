-- reader.lua KEY: the seeds' reader done right: attach read-only, read, detach.
local shm = require "shm"

local key = tonumber(arg[1])
local function say(fmt, ...) print(string.format("reader: " .. fmt, ...)) io.stdout:flush() end

local seg <close>, msg = shm.open(key, "r")
if not seg then
  io.stderr:write("reader: ", msg, "\n")
  os.exit(1)
end
say("attached %s", tostring(seg))
say("nattch=%d", seg:stat().nattch)
local text = seg:unpack(0, "s4")
say("read %q", text)
local ok, err = pcall(seg.write, seg, "x")
say("writing to a read-only attachment: %s", ok and "allowed?!" or err)
seg:detach()
say("detached")
