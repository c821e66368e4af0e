-- make bench-compare BASE=rev: the same small-op, queue, round-trip and dict loops
-- against two builds in one run, interleaved (base, this, base, this...), so
-- that a change is measured beside what it changes.
-- usage: compare.lua BASE_DIR THIS_DIR ROUNDS
--   each DIR holds lua/ and build/$LUA/ of a checkout (make bench-compare
--   builds BASE from git into build/bench/base)
local lib = require "lib"

local base_dir, this_dir, rounds = arg[1], arg[2], tonumber(arg[3] or "5")
local LUA = os.getenv("LUA") or "lua5.4"
local HERE = arg[0]:match("^(.*)/[^/]*$") or "."
local q = lib.q

-- the loops: bench/*.lua of this checkout, the module of each build
local CASES = {
  { "seg:read(0, 64), ns", "small.lua read64 2000000" },
  { "seg:write(64 B), ns", "small.lua write64 2000000" },
  { "seg:pack, ns", "small.lua pack 2000000" },
  { "seg:unpack, ns", "small.lua unpack 2000000" },
  { "seg:load, ns", "small.lua load 2000000" },
  { "seg:add, ns", "small.lua add 2000000" },
  { "queue 64 B, msgs/s", "msg.lua read queue 64 1000000" },
  { "queue 4 KiB, msgs/s", "msg.lua read queue 4096 200000" },
  { "queue round trip, us", "pingpong.lua client queue 50000" },
  { "dict get 16 B hot key, ns", "dict.lua dict get16 1000000" },
  { "dict set 16 B hot key, ns", "dict.lua dict set16 1000000" },
  { "dict set 1 KiB, ns", "dict.lua dict set1k 500000" },
  { "dict get over 10^4 keys, ns", "dict.lua dict get10k 1000000" },
  { "dict set over 10^4 keys, ns", "dict.lua dict set10k 1000000" },
  { "dict incr, ns", "dict.lua dict incr 1000000" },
}

local function run(dir, cmd)
  local env = string.format("LUA_PATH=%s LUA_CPATH=%s", q(HERE .. "/?.lua;" .. dir .. "/lua/?.lua;;"),
    q(dir .. "/build/" .. LUA .. "/?.so;;"))
  local p = assert(io.popen(env .. " " .. LUA .. " " .. HERE .. "/" .. cmd, "r"))
  local out = p:read("*a")
  p:close()
  return tonumber(out:match("([%d.]+)%s*$")) or error("bench-compare: no figure from " .. cmd .. ": " .. out)
end

local results = {}
for r = 1, rounds do
  for _, c in ipairs(CASES) do
    results[c[1]] = results[c[1]] or { base = {}, this = {} }
    table.insert(results[c[1]].base, run(base_dir, c[2]))
    table.insert(results[c[1]].this, run(this_dir, c[2]))
  end
  io.stderr:write(string.format("bench-compare: round %d of %d\n", r, rounds))
end

print(string.format("%s, %d interleaved rounds, medians\n", LUA, rounds))
print("| loop | base | this | this / base |")
print("|---|---|---|---|")
for _, c in ipairs(CASES) do
  local b, t = lib.median(results[c[1]].base), lib.median(results[c[1]].this)
  print(string.format("| %s | %.3g | %.3g | %.2f |", c[1], b, t, t / b))
end
