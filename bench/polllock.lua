-- lua-resty-lock's protocol, for the lock benchmarks' baseline (bench/lock.lua
-- on a shm.dict, bench/ngx_lock.lua on ngx.shared.DICT when lua-resty-lock is
-- not installed): lock is add(key, true, exptime); while it is held, sleep
-- `step` (1 ms, doubled each time, at most 0.5 s) and add again, up to the
-- timeout (5 s); unlock deletes the key.
--   local lk = require("polllock")(dict, sleep)   lk:lock(key)  lk:unlock()
return function(dict, sleep)
  local o = { key = nil }
  function o.lock(_, key)
    local ok, err = dict:add(key, true, 30)
    if ok then o.key = key return 0 end
    if err ~= "exists" then return nil, err end
    local step, elapsed, timeout = 0.001, 0, 5
    while timeout > 0 do
      sleep(step)
      elapsed, timeout = elapsed + step, timeout - step
      if dict:add(key, true, 30) then o.key = key return elapsed end
      step = math.min(math.max(0.001, step * 2), timeout, 0.5)
    end
    return nil, "timeout"
  end
  function o.unlock() dict:delete(o.key) o.key = nil return 1 end
  return o
end
