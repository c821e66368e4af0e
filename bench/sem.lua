-- Semaphores: lua-shm's shm.sem beside C (bench/csem.c) and Python's sysv_ipc.
-- usage: sem.lua uncontended sysv|posix COUNT  -> nanoseconds per acquire+release pair
--        sem.lua pingpong sysv|posix COUNT     -> nanoseconds per round trip: this process
--          releases "ping" and acquires "pong", a second process the reverse
--        (sem.lua pong KIND COUNT PING PONG: that second process)
--        sem.lua floor - COUNT                 -> nanoseconds per pair of C API method
--          calls that do nothing (close of a closed semaphore: the same lookup and type
--          check as acquire and release, no system call): what any C API method costs
--        sem.lua compare [ROUNDS]              -> the section alone: this interpreter's
--          figures beside C's (build/bench/csem), interleaved rounds, medians and ratios
--          (LUA_PATH must reach bench/ and lua/, as make bench sets it)
local shm = require "shm"
local lib = require "lib"

local mode, kind, count = arg[1], arg[2], tonumber(arg[3])
local pid = io.open("/proc/self/stat"):read("*n")
local function obj(tag)
  if kind == "posix" then return "/lshm-bench-" .. tag .. "-" .. pid end
  return 0x4c530000 + (pid % 0x4000) * 4 + (tag == "ping" and 1 or tag == "pong" and 2 or 3)
end

if mode == "compare" then
  local rounds = tonumber(arg[2]) or 5
  local here = arg[0]:match("^(.*)/[^/]*$") or "."
  local csem = here .. "/../build/bench/csem"
  local function run(cmd)
    local out, ok = lib.sh(cmd)
    local v = ok and tonumber(out:match("^%s*([%d.]+)%s*$"))
    if not v then error("`" .. cmd .. "` failed:\n" .. out, 0) end
    return v
  end
  local function self(...) return table.concat({ lib.q(arg[-1]), lib.q(arg[0]), ... }, " ") end
  local cases = {}
  for _, k in ipairs({ "sysv", "posix" }) do
    local n = k == "sysv" and 300000 or 3000000
    cases[#cases + 1] = { k .. " uncontended", self("uncontended", k, n), csem .. " uncontended " .. k .. " " .. n }
    cases[#cases + 1] = { k .. " pingpong", self("pingpong", k, 50000), csem .. " pingpong " .. k .. " 50000" }
  end
  local floor = {}
  for r = 1, rounds do
    io.stderr:write(string.format("sem.lua: round %d of %d\n", r, rounds))
    for _, c in ipairs(cases) do
      c.l = c.l or {}
      c.c = c.c or {}
      c.l[r], c.c[r] = run(c[2]), run(c[3])
    end
    floor[r] = run(self("floor", "-", 3000000))
  end
  -- the ratio: the median of each round's own lua-shm / C
  local function ratio(a, b)
    local r = {}
    for i = 1, #a do r[i] = a[i] / b[i] end
    return lib.median(r)
  end
  print(string.format("%s%s, %d rounds, medians (ns)", jit and jit.version or _VERSION,
    jit and os.getenv("SHM_NO_FFI") == "1" and " (SHM_NO_FFI=1)" or "", rounds))
  print(string.format("%-20s %10s %10s %8s", "case", "lua-shm", "C", "ratio"))
  for _, c in ipairs(cases) do
    print(string.format("%-20s %10.1f %10.1f %8.2f", c[1], lib.median(c.l), lib.median(c.c), ratio(c.l, c.c)))
  end
  print(string.format("%-20s %10.1f %10.1f %8.2f", "C API method floor", lib.median(floor),
    lib.median(cases[3].c), ratio(floor, cases[3].c)))
elseif mode == "floor" then
  local s = assert(shm.sem.create(shm.PRIVATE, 1))
  s:remove()
  s:close()
  local t0 = lib.now()
  for _ = 1, count do
    s:close()
    s:close()
  end
  local t1 = lib.now()
  print(string.format("%.1f", (t1 - t0) * 1e9 / count))
elseif mode == "uncontended" then
  local s = assert(shm.sem.create(obj("u"), 1))
  local t0 = lib.now()
  for _ = 1, count do
    s:acquire()
    s:release()
  end
  local t1 = lib.now()
  s:remove()
  print(string.format("%.1f", (t1 - t0) * 1e9 / count))
elseif mode == "pingpong" then
  local a, b = obj("ping"), obj("pong")
  local ping, pong = assert(shm.sem.create(a, 0)), assert(shm.sem.create(b, 0))
  local peer = assert(io.popen(table.concat({ arg[-1], lib.q(arg[0]), "pong", kind, count, lib.q(a), lib.q(b) },
    " "), "r"))
  assert(pong:acquire(30)) -- the peer is ready
  local t0 = lib.now()
  for _ = 1, count do
    ping:release()
    pong:acquire()
  end
  local t1 = lib.now()
  peer:close()
  ping:remove()
  pong:remove()
  print(string.format("%.1f", (t1 - t0) * 1e9 / count))
else -- pong
  local a, b = tonumber(arg[4]) or arg[4], tonumber(arg[5]) or arg[5]
  local ping, pong = assert(shm.sem.open(a)), assert(shm.sem.open(b))
  pong:release()
  for _ = 1, count do
    ping:acquire()
    pong:release()
  end
end
