-- counters.lua NAME WHO: one of the two processes of make demo's dict scenario.
-- Opens the dict NAME (made by demo.lua), counts 1000 hits into "hits" and
-- its own "hits:WHO" with incr, and the first one caches a greeting for
-- half a second (a TTL'd entry, as a cache would).
local shm = require "shm"

local name, who = assert(arg[1], "usage: counters.lua NAME WHO"), assert(arg[2])
local function say(fmt, ...) print(string.format("counters %s: " .. fmt, who, ...)) io.stdout:flush() end

local d = assert(shm.dict.open(name))
for _ = 1, 1000 do
  assert(d:incr("hits", 1, 0))       -- init 0: the first incr makes the key
  assert(d:incr("hits:" .. who, 1, 0))
end
if d:add("greeting", "hello from counters " .. who, 0.5) then
  say("cached the greeting for 0.5 s")
end
say("counted 1000 hits; hits is now %d", d:get("hits"))
d:detach()
