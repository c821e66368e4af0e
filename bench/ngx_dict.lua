-- Section 4's baseline: ngx.shared.DICT in the loops of dictloops.lua, run
-- inside an nginx worker (servers.lua starts nginx with this on its
-- lua_package_path).  lua-resty-core makes get/set/incr FFI calls, which the
-- worker's LuaJIT compiles.  Locations:
--   /info                        the worker's LuaJIT and how DICT is called
--   /op?op=get16&n=N[&jit=off]   ns per operation (one worker; jit=off: interpreted)
--   /pair?mode=getset|getget&dur=S
--                                the two workers hammer one key for S seconds;
--                                ops/s of worker 1 (a getter) and 2
--   /scale?what=keys&a=NKEYS&b=N | what=list&a=N | what=fill&a=SIZE
--                                section 5: scaleloops.lua in the zones of
--                                scaleloops.zones(), flushed first
-- luacheck: read globals ngx
local ffi = require "ffi"
local loops = require "dictloops"
local scale = require "scaleloops"

ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } lshm_bench_timespec;
int clock_gettime(int clock, lshm_bench_timespec *ts);
]]
local ts = ffi.new("lshm_bench_timespec")
local CLOCK_MONOTONIC = 1
local function now()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local M = {}
local d = ngx.shared.bench

local function reply(ok, v)
  if ok then ngx.say(v) else ngx.say("error: ", tostring(v)) end
end

function M.info()
  local openresty = pcall(require, "table.isempty") -- an OpenResty LuaJIT extension
  local ffi_dict = package.loaded["resty.core.shdict"] ~= nil
  ngx.say(string.format("%s%s, JIT %s, ngx.shared.DICT's methods from %s", jit.version,
    openresty and " (OpenResty's branch)" or "", jit.status() and "on" or "off",
    ffi_dict and "lua-resty-core (FFI)" or "the Lua C API"))
end

function M.op()
  local args = ngx.req.get_uri_args()
  local op, n = loops.dict(d)[args.op], tonumber(args.n)
  if not op or not n then return reply(false, "bad op or n") end
  local nojit = args.jit == "off"
  if nojit then -- this worker interprets the loop (and its FFI calls), then compiles again
    jit.off()
    jit.flush()
  end
  local ok, v = pcall(function() return string.format("%.3f", loops.time(op, n, now)) end)
  if nojit then jit.on() end
  reply(ok, v)
end

function M.scale()
  local args = ngx.req.get_uri_args()
  local what, a, b = args.what, tonumber(args.a), tonumber(args.b)
  local zone = what == "keys" and a and ("scale_" .. string.format("%d", a)) or what == "list" and "scale_list"
    or what == "fill" and a and ("scale_fill" .. string.format("%d", a))
  local z = zone and ngx.shared[zone]
  if not z or not a or (what == "keys" and not b) then return reply(false, "bad what, a or b") end
  local ok, v = pcall(function()
    z:flush_all()
    z:flush_expired(0)
    local x, y, w
    if what == "keys" then x, y = scale.getset(z, a, b, now)
    elseif what == "list" then x, y, w = scale.list(z, a, now)
    else x = scale.fill(z, a, scale.FILL_CAPACITY) end
    z:flush_all()
    z:flush_expired(0)
    return (string.format("%.3f %s %s", x, y and string.format("%.3f", y) or "", w and string.format("%.3f", w) or "")
      :gsub("%s+$", ""))
  end)
  reply(ok, v)
end

function M.pair()
  local args = ngx.req.get_uri_args()
  local mode, dur = args.mode, tonumber(args.dur)
  if (mode ~= "getset" and mode ~= "getget") or not dur then return reply(false, "bad mode or dur") end
  local gen = d:incr("gen", 1, 0)
  loops.pair_prep(d)
  d:set("job", gen .. " " .. mode .. " " .. dur) -- the workers' timers pick it up
  local deadline = now() + dur + 10
  while true do
    local a, b = d:get("res:" .. gen .. ":1"), d:get("res:" .. gen .. ":2")
    if a and b then return reply(true, a .. " " .. b) end
    if now() > deadline then
      return reply(false, "the workers did not answer: " .. tostring(a) .. " " .. tostring(b))
    end
    ngx.sleep(0.005)
  end
end

-- every worker: look for a new pair job; the first two to claim it run it
local last = 0
local function poll(premature)
  if premature then return end
  local job = d:get("job")
  local gen, mode, dur = (job or ""):match("^(%d+) (%a+) ([%d.]+)$")
  gen = tonumber(gen)
  if not gen or gen <= last then return end
  last = gen
  local r = d:incr("role:" .. gen, 1, 0)
  if r > 2 then return end
  local role = (r == 2 and mode == "getset") and "set" or "get"
  local ok, v = pcall(function()
    loops.barrier(d, "go:" .. gen, 2, 5, now)
    return loops.hammer(d, role, tonumber(dur), now)
  end)
  d:set("res:" .. gen .. ":" .. r, ok and string.format("%.0f", v) or ("error " .. tostring(v)))
end

function M.init_worker()
  assert(ngx.timer.every(0.01, poll))
end

return M
