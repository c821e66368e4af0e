-- Section 4: shm.dict, and a plain Lua table (the floor), in the loops of
-- dictloops.lua (which ngx.shared.DICT runs too, inside nginx).
-- usage: dict.lua dict|table OP ITER [nojit]   -> nanoseconds per operation
--        dict.lua floor get16 ITER [nojit]     -> the same for the C API's floor
--            (seg:read(0, 16) of a small segment: dictloops.floor)
--        dict.lua pair getset|getget DUR      -> operations per second of
--            process 1 (a getter) and process 2 (a setter or a getter),
--            hammering one key together for DUR seconds
--        dict.lua child NAME ROLE DUR          (process 2, started by pair)
-- nojit: jit.off() first (LuaJIT: the same loops, interpreted)
local lib = require "lib"
local loops = require "dictloops"

local what = arg[1]
if arg[4] == "nojit" then
  if not jit then error("dict.lua: nojit needs LuaJIT", 0) end
  jit.off()
end

local q = lib.q
local function pid() return io.open("/proc/self/stat"):read("*n") end

local shm
if what ~= "table" then
  shm = require "shm"
  if not shm.dict then error("dict.lua: shm.dict not built", 0) end
end

if what == "dict" or what == "table" or what == "floor" then
  local op, iter = arg[2], tonumber(arg[3])
  local d, impl
  if what == "floor" then
    d = assert(shm.create(shm.PRIVATE, 4096))
    d:remove()
    impl = loops.floor(d)
  elseif what == "dict" then
    d = assert(shm.dict.create("/lshm-bench-dict-" .. pid(), loops.CAPACITY))
    d:remove() -- the mapping stays; the name goes at once
    impl = loops.dict(d)
  else
    impl = loops.table({})
  end
  local ok, v = pcall(loops.time, assert(impl[op], "unknown op " .. tostring(op)), iter, lib.now)
  if d then d:detach() end
  if not ok then error(v, 0) end
  print(string.format("%.3f", v))
elseif what == "pair" then
  local mode, dur = arg[2], tonumber(arg[3])
  local name = "/lshm-bench-pair-" .. pid()
  local d = assert(shm.dict.create(name, loops.CAPACITY))
  local removed = false
  local ok, v1, v2 = pcall(function()
    loops.pair_prep(d)
    local role2 = mode == "getset" and "set" or "get"
    local child = assert(io.popen(table.concat({ arg[-1], q(arg[0]), "child", q(name), role2, dur }, " ")))
    local okb, err = pcall(loops.barrier, d, "go", 2, 10, lib.now)
    removed = true
    d:remove() -- both have attached (or the child failed): the name can go
    if not okb then
      child:close()
      error(err, 0)
    end
    local mine = loops.hammer(d, "get", dur, lib.now)
    local theirs = tonumber(child:read("*a"):match("^%s*([%d.]+)"))
    if not child:close() or not theirs then error("dict.lua: the second process failed", 0) end
    return mine, theirs
  end)
  if not removed then pcall(d.remove, d) end
  d:detach()
  if not ok then error(v1, 0) end
  print(string.format("%.0f %.0f", v1, v2))
elseif what == "child" then
  local name, role, dur = arg[2], arg[3], tonumber(arg[4])
  local d = assert(shm.dict.open(name))
  local ok, v = pcall(function()
    loops.barrier(d, "go", 2, 10, lib.now)
    return loops.hammer(d, role, dur, lib.now)
  end)
  d:detach()
  if not ok then error(v, 0) end
  print(string.format("%.0f", v))
else
  error("usage: dict.lua dict|table|pair|child ...", 0)
end
