-- bench/lock.lua's baseline inside nginx (servers.lua starts nginx with this
-- on its lua_package_path): lua-resty-lock on ngx.shared.DICT when it is
-- installed, else its protocol (bench/polllock.lua: add(key, true, exptime),
-- then ngx.sleep of 1 ms doubling up to 0.5 s between tries; unlock deletes).
--   /lock?mode=info                           which of the two runs
--   /lock?mode=uncontended&n=N                ns per lock + unlock
--   /lock?mode=handover&rounds=R&hold=H       median µs from an unlock to
--       the waiter's return (two light threads of one worker: the holder
--       keeps the lock H seconds while the other waits in lock)
-- luacheck: read globals ngx
local ffi = require "ffi"
local M = {}

require "ngx_dict" -- (its cdef of clock_gettime, which can be declared once)
local ts = ffi.new("lshm_bench_timespec")
local function now() -- CLOCK_MONOTONIC, as bench/lock.lua's processes
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local has_resty, resty = pcall(require, "resty.lock")

local function newlock()
  if has_resty then return assert(resty:new("locks")) end
  return require("polllock")(ngx.shared.locks, ngx.sleep)
end

local function median(xs)
  table.sort(xs)
  local n = #xs
  if n % 2 == 1 then return xs[(n + 1) / 2] end
  return (xs[n / 2] + xs[n / 2 + 1]) / 2
end

function M.run()
  local args = ngx.req.get_uri_args()
  if args.mode == "info" then
    ngx.say(has_resty and ("lua-resty-lock " .. tostring(resty._VERSION) .. " on ngx.shared.DICT")
      or "resty.lock's protocol on ngx.shared.DICT (lua-resty-lock is not installed: bench/ngx_lock.lua)")
  elseif args.mode == "uncontended" then
    local n = tonumber(args.n)
    local lk = newlock()
    local t0 = now()
    for _ = 1, n do
      lk:lock("k")
      lk:unlock()
    end
    ngx.say(string.format("%.1f", (now() - t0) / n * 1e9))
  elseif args.mode == "handover" then
    local rounds, hold = tonumber(args.rounds), tonumber(args.hold)
    local lat = {}
    for r = 1, rounds do
      local holder, waiter = newlock(), newlock()
      local th = ngx.thread.spawn(function()
        assert(holder:lock("h"))
        ngx.sleep(hold)
        local t0 = now()
        holder:unlock()
        return t0
      end)
      assert(waiter:lock("h"))
      local t1 = now()
      waiter:unlock()
      local _, t0 = ngx.thread.wait(th)
      lat[r] = t1 - t0
    end
    ngx.say(string.format("%.1f", median(lat) * 1e6))
  else
    ngx.say("error: bad mode")
  end
end

return M
