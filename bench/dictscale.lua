-- Section 5 (issue 17): shm.dict at scale, in the loops of scaleloops.lua
-- (which ngx.shared.DICT runs too, inside nginx), each in a new dict.
-- usage: dictscale.lua keys NKEYS N   -> ns per get, ns per set
--        dictscale.lua list N         -> ns per rpush, ns per lpop, µs to delete an N-element list
--        dictscale.lua fill SIZE      -> values of SIZE bytes safe_set stores in
--                                        a dict of scaleloops.FILL_CAPACITY bytes
local shm = require "shm"
local lib = require "lib"
local loops = require "scaleloops"

local what = arg[1]
local a, b = math.floor(tonumber(arg[2]) or 0), math.floor(tonumber(arg[3]) or 0)
local capacity = ({ keys = loops.capacity(a), list = loops.LIST_CAPACITY, fill = loops.FILL_CAPACITY })[what]
if not capacity then error("usage: dictscale.lua keys NKEYS N | list N | fill SIZE", 0) end

local pid = io.open("/proc/self/stat"):read("*n")
local d = assert(shm.dict.create("/lshm-bench-scale-" .. pid, capacity))
d:remove() -- the mapping stays; the name goes at once
local ok, x, y, z = pcall(function()
  if what == "keys" then return loops.getset(d, a, b, lib.now) end
  if what == "list" then return loops.list(d, a, lib.now) end
  return loops.fill(d, a, capacity)
end)
d:detach()
if not ok then error(x, 0) end
print(((string.format("%.3f %s %s", x, y and string.format("%.3f", y) or "", z and string.format("%.3f", z) or ""))
  :gsub("%s+$", "")))
