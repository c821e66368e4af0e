-- make bench: every figure is the median of several runs, measured next to
-- its baseline in the same run, interleaved (A B A B) because machines are
-- noisy.  Prints one table and writes it to bench/results/results.md.
--   BENCH_QUICK=1  one short round (a smoke test, for CI)
local lib = require "lib"

local QUICK = os.getenv("BENCH_QUICK") == "1"
local ROUNDS = QUICK and 1 or tonumber(os.getenv("BENCH_ROUNDS") or "5")
local SCALE = QUICK and 0.02 or 1
local LUA = arg[-1] or "lua5.4"
local LUANAME = LUA:match("[^/]*$")
local HERE = arg[0]:match("^(.*)/[^/]*$") or "."
local BIN = HERE .. "/../build/bench"
-- make bench (lua5.4): results.md; make bench LUA=luajit: results-luajit.md, ...
local RESULTS = HERE .. "/results/results" .. (LUANAME == "lua5.4" and "" or "-" .. LUANAME) .. ".md"

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
local function n(x) return math.max(1, math.floor(x * SCALE)) end

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("*a")
  local ok = p:close()
  return out, ok
end

local function number(cmd)
  local out, ok = sh(cmd)
  local v = tonumber(out:match("^%s*([%d.]+)%s*$"))
  if not ok or not v then error("bench: `" .. cmd .. "` failed:\n" .. out, 0) end
  return v
end

local function lua(script, ...)
  local parts = { LUA, q(HERE .. "/" .. script) }
  for _, a in ipairs({ ... }) do parts[#parts + 1] = q(a) end
  return table.concat(parts, " ")
end

local PY = "/usr/bin/python3"
local has_python = select(2, sh(PY .. " -c 'import sysv_ipc'"))
local has_strace = select(2, sh("command -v strace"))
local function py(...)
  return table.concat({ PY, q(HERE .. "/sysv_ipc_bench.py"), ... }, " ")
end

-- the cases: name -> command printing one number
local cases, order = {}, {}
local function case(name, cmd)
  cases[name] = { cmd = cmd, values = {} }
  order[#order + 1] = name
end

local SIZES = { { 64, "64 B", n(2e6) }, { 4096, "4 KiB", n(5e5) },
                { 1024 * 1024, "1 MiB", n(3000) }, { 16 * 1024 * 1024, "16 MiB", n(150) } }
for _, sz in ipairs(SIZES) do
  for _, mode in ipairs({ "write", "read" }) do
    case("copy " .. mode .. " " .. sz[2], lua("copy.lua", mode, sz[1], sz[3]))
    if mode == "read" then case("sub " .. sz[2], lua("copy.lua", "sub", sz[1], sz[3])) end
    case("memcpy " .. mode .. " " .. sz[2], table.concat({ BIN .. "/cmemcpy", mode, sz[1], sz[3] }, " "))
    if has_python then
      case("python " .. mode .. " " .. sz[2], py("copy", mode, sz[1], math.max(1, math.floor(sz[3] / 4))))
    end
  end
end

local OPS = { "floor", "read64", "write64", "pack", "unpack", "load", "add" }
for _, op in ipairs(OPS) do case("small " .. op, lua("small.lua", op, n(3e6))) end
if has_python then
  for _, op in ipairs({ "floor", "read64", "write64" }) do case("python " .. op, py("small", op, n(1e6))) end
end

local MSG = { { 64, "64 B", n(2e6) }, { 4096, "4 KiB", n(2e5) } }
for _, m in ipairs(MSG) do
  for _, tr in ipairs({ "queue", "fifo-flush", "fifo-buffered" }) do
    case(tr .. " " .. m[2], lua("msg.lua", "read", tr, m[1], m[3]))
  end
  case("cpipe " .. m[2], table.concat({ BIN .. "/cpipe", m[1], m[3] }, " "))
end
case("pingpong queue", lua("pingpong.lua", "client", "queue", n(1e5)))
case("pingpong fifo", lua("pingpong.lua", "client", "fifo", n(5e4)))

-- run: every case once per round, in a fixed interleaved order
for r = 1, ROUNDS do
  io.stderr:write(string.format("bench: round %d of %d\n", r, ROUNDS))
  for _, name in ipairs(order) do
    local c = cases[name]
    c.values[#c.values + 1] = number(c.cmd)
  end
end
local function med(name) return lib.median(cases[name].values) end

-- system calls per small operation (strace): the difference between a run of
-- N+100000 calls and one of N, over 100000
local syscalls = {}
if has_strace then
  local function count(op, iter)
    local tmp = os.tmpname()
    sh("strace -f -qq -c -o " .. tmp .. " " .. lua("small.lua", op, iter))
    local f = io.open(tmp)
    local text = f and f:read("*a") or ""
    if f then f:close() end
    os.remove(tmp)
    return tonumber(text:match("\n[%s%d.]+%s+(%d+)%s+%d*%s*total")) or 0
  end
  for _, op in ipairs(OPS) do
    if op ~= "floor" then syscalls[op] = (count(op, 101000) - count(op, 1000)) / 100000 end
  end
end

-- report
local out = {}
local function line(s) out[#out + 1] = s end
local function cpu()
  local f = io.open("/proc/cpuinfo")
  local t = f and f:read("*a") or ""
  if f then f:close() end
  return t:match("model name%s*:%s*([^\n]+)") or "?"
end
line("# lua-shm benchmarks")
line("")
line(string.format("Machine: %s, %s cores, Linux %s, %s. Medians of %d interleaved rounds%s.",
  cpu(), (sh("nproc"):gsub("%s", "")), (sh("uname -r"):gsub("%s", "")), jit and jit.version or _VERSION, ROUNDS,
  QUICK and " (QUICK: tiny counts, figures not meaningful)" or ""))
line("")
line("## 1. Bulk copy into and out of a System V segment, against C memcpy")
line("")
line("The last columns: for reads, the interpreter's own cost of making a new string of that size " ..
  "(`s:sub(2, size + 1)`), which `seg:read` cannot avoid; and Python's sysv_ipc.")
if jit then
  line("")
  line("LuaJIT interns every string and compiles the floor loop: a string whose bytes already exist is " ..
    "found, not made, so the floor column is not the cost of making a string here, and `seg:read` of " ..
    "unchanged bytes costs a hash and a compare with the string it made before, not an allocation.")
end
line("")
line("| size | op | lua-shm | memcpy | lua-shm / memcpy speed | Lua string floor |" ..
  (has_python and " python sysv_ipc |" or ""))
line("|---|---|---|---|---|---|" .. (has_python and "---|" or ""))
local function rate(size, ns) -- GB/s
  return string.format("%.2f GB/s", size / ns)
end
for _, sz in ipairs(SIZES) do
  for _, mode in ipairs({ "write", "read" }) do
    local l, c = med("copy " .. mode .. " " .. sz[2]), med("memcpy " .. mode .. " " .. sz[2])
    local row = string.format("| %s | seg:%s | %.0f ns (%s) | %.0f ns (%s) | %.2f | %s |", sz[2], mode, l,
      rate(sz[1], l), c, rate(sz[1], c), c / l,
      mode == "read" and string.format("%.0f ns (%s)", med("sub " .. sz[2]), rate(sz[1], med("sub " .. sz[2])))
        or "")
    if has_python then
      local p = med("python " .. mode .. " " .. sz[2])
      row = row .. string.format(" %.0f ns (%s) |", p, rate(sz[1], p))
    end
    line(row)
  end
end
line("")
line("## 2. Small operations: ns per call against the interpreter's floor")
line("")
line("Floor: `s:sub(1, 64)` on a 64-byte string in the same loop.")
if jit then
  line("")
  line("LuaJIT compiles the floor loop to almost nothing, while a call of a C function through the Lua " ..
    "C API (every lua-shm method) is not compiled: here the ratio says how much slower a call is than " ..
    "JIT-compiled Lua, not how much lua-shm adds to a call.")
end
line("")
line("| op | ns/call | floor | ratio to floor | system calls per call |")
line("|---|---|---|---|---|")
local floor = med("small floor")
local LABEL = { read64 = "seg:read(0, 64)", write64 = "seg:write(s64, 0)", pack = 'seg:pack(0, "j", i)',
  unpack = 'seg:unpack(0, "j")', load = "seg:load(8)", add = "seg:add(8, 1)" }
for _, op in ipairs(OPS) do
  if op ~= "floor" then
    local v = med("small " .. op)
    line(string.format("| `%s` | %.1f | %.1f | %.2f | %s |", LABEL[op], v, floor, v / floor,
      syscalls[op] and string.format("%.4f", syscalls[op]) or "(no strace)"))
  end
end
if has_python then
  line("")
  line(string.format("Python sysv_ipc, same machine: `read(64)` %.1f ns, `write(s64)` %.1f ns; its floor " ..
    "(`s64[0:63]`) %.1f ns.", med("python read64"), med("python write64"), med("python floor")))
end
line("")
line("## 3. Messages between two Lua processes")
line("")
line("| size | transport | messages/s | MB/s | shm.queue is × faster |")
line("|---|---|---|---|---|")
for _, m in ipairs(MSG) do
  local qv = med("queue " .. m[2])
  for _, tr in ipairs({ "queue", "fifo-flush", "fifo-buffered", "cpipe" }) do
    local v = med(tr .. " " .. m[2])
    local label = ({ queue = "shm.queue push/pop", ["fifo-flush"] = "FIFO, flush per message",
      ["fifo-buffered"] = "FIFO, buffered", cpipe = "C, pipe write/read (no Lua)" })[tr]
    line(string.format("| %s | %s | %.0f | %.1f | %s |", m[2], label, v, v * m[1] / 1e6,
      tr == "queue" and "" or string.format("%.2f", qv / v)))
  end
end
line("")
line(string.format("Round trip (64 B there and back): shm.queue %.2f µs, FIFO with flush %.2f µs (%.1f× faster).",
  med("pingpong queue"), med("pingpong fifo"), med("pingpong fifo") / med("pingpong queue")))
line("")
line("Every message is checked byte for byte and in order (1024 distinct messages, each with its index).")

local report = table.concat(out, "\n") .. "\n"
io.write(report)
if not QUICK then
  local f = assert(io.open(RESULTS, "w"))
  f:write(report)
  f:close()
  io.stderr:write("bench: written to " .. RESULTS .. "\n")
end
