-- LuaJIT's FFI paths beside the Lua C API methods (SHM_NO_FFI=1 in a child)
-- and beside the floor (a Lua string op, an FFI load of our own), with the
-- JIT on and off; shm.queue 64-byte messages between two processes; and
-- inside nginx, shm.dict beside ngx.shared.DICT in one worker's loop.
-- Every figure is the median of ROUNDS runs, the configurations interleaved.
--   luajit bench/ffi.lua                (make bench LUA=luajit runs it too)
--   BENCH_QUICK=1  one short round      BENCH_ROUNDS=n
--   SHM_NGINX_ROOT a dpkg -x root holding OpenResty's nginx module (see
--                  spec/nginx_spec.lua); without nginx that part is skipped
-- Writes bench/results/ffi.md.
local lib = require "lib"
local ffi = require "ffi"
local shm = require "shm"

if not pcall(ffi.typeof, "struct shm_bench_timespec") then
  ffi.cdef [[
struct shm_bench_timespec { long tv_sec; long tv_nsec; };
int clock_gettime(int clk, struct shm_bench_timespec *ts);
]]
end
local ts = ffi.new("struct shm_bench_timespec")
local function now()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local QUICK = os.getenv("BENCH_QUICK") == "1"
local ROUNDS = QUICK and 1 or tonumber(os.getenv("BENCH_ROUNDS") or "5")
local SCALE = QUICK and 0.05 or 1
local HERE = arg[0]:match("^(.*)/[^/]*$") or "."
local LUA = arg[-1] or "luajit"

-- The single-process loops: name -> function(n) running the op n times.
local function ops()
  local seg = assert(shm.create(shm.PRIVATE, 4096))
  seg:remove()
  local d = assert(shm.dict.create(shm.PRIVATE, 1024 * 1024))
  d:remove()
  assert(d:set("hot", "a value of 24 bytes.....")) -- (a string: ngx's hot key below is one too)
  local q = assert(shm.queue.create(shm.PRIVATE, 64 * 1024))
  q:remove()
  local msg = string.rep("m", 64)
  local own = ffi.new("int64_t[8]")
  local bytes = ffi.new("char[64]")
  local str = string.rep("x", 64)
  local sink
  return {
    { "seg:load(8)", function(n) local x = 0 for _ = 1, n do x = x + seg:load(8) end sink = x end },
    { "seg:store(8, i)", function(n) for i = 1, n do seg:store(8, i) end end },
    { "seg:add(8, 1)", function(n) for _ = 1, n do seg:add(8, 1) end end },
    { "seg:read(0, 64)", function(n) local x for _ = 1, n do x = seg:read(0, 64) end sink = x end },
    { "dict:get hot key", function(n) local x for _ = 1, n do x = d:get("hot") end sink = x end },
    { "dict:set hot key", function(n) for i = 1, n do d:set("n", i) end end },
    { "dict:incr", function(n) for _ = 1, n do d:incr("c", 1, 0) end end },
    { "queue:push+pop 64 B, one process", function(n)
      local x for _ = 1, n do q:push(msg, 0) x = q:pop(0) end sink = x end },
    { "floor: FFI int64 load", function(n) local x = 0 for _ = 1, n do x = x + own[1] end sink = x end },
    { "floor: ffi.string 64 B", function(n) local x for _ = 1, n do x = ffi.string(bytes, 64) end sink = x end },
    { "floor: string.byte", function(n) local x = 0 for i = 1, n do x = x + str:byte(i % 64 + 1) end sink = x end },
  }, function() seg:detach() d:detach() q:detach() return sink end
end

-- child: print "name ns" for every op (JIT on, or off with "nojit")
if arg[1] == "--ops" then
  if arg[2] == "nojit" then jit.off() jit.flush() end
  local n = math.floor((arg[2] == "nojit" and 2e5 or 2e6) * SCALE)
  local list, done = ops()
  for _, op in ipairs(list) do
    op[2](math.floor(n / 10)) -- warm up (and compile)
    local t0 = now()
    op[2](n)
    print(string.format("%s\t%.2f", op[1], (now() - t0) / n * 1e9))
  end
  done()
  return
end

local q = lib.q
local sh = lib.sh
local median = lib.median

local results = {}   -- [config][name] = { values }
local function add(config, name, v)
  results[config] = results[config] or {}
  results[config][name] = results[config][name] or {}
  table.insert(results[config][name], v)
end
local function get(config, name)
  local t = results[config] and results[config][name]
  return t and median(t)
end

local CONFIGS = {
  { "ffi jit", "", "jit" }, { "capi jit", "SHM_NO_FFI=1 ", "jit" },
  { "ffi nojit", "", "nojit" }, { "capi nojit", "SHM_NO_FFI=1 ", "nojit" },
}
local names = {}
for _, op in ipairs((ops())) do names[#names + 1] = op[1] end

-- the queue: 64-byte messages, writer and reader processes (bench/msg.lua)
local MSGS = math.floor(2e6 * SCALE)
local function queue_rate(env)
  local path = HERE .. "/?.lua;" .. (os.getenv("LUA_PATH") or ";;")
  local out, ok = sh("cd " .. q(HERE) .. " && " .. env .. "LUA_PATH=" .. q(path) .. " " .. LUA
    .. " msg.lua read queue 64 " .. MSGS)
  local v = tonumber(out:match("^%s*([%d.]+)%s*$"))
  if not ok or not v then error("bench: msg.lua failed:\n" .. out, 0) end
  return v
end

for round = 1, ROUNDS do
  io.stderr:write(string.format("bench/ffi.lua: round %d of %d\n", round, ROUNDS))
  for _, c in ipairs(CONFIGS) do
    local out, ok = sh(c[2] .. LUA .. " " .. q(arg[0]) .. " --ops " .. c[3])
    if not ok then error("bench: child failed:\n" .. out, 0) end
    for name, v in out:gmatch("([^\t\n]+)\t([%d.]+)") do add(c[1], name, tonumber(v)) end
  end
  add("ffi", "queue", queue_rate(""))
  add("capi", "queue", queue_rate("SHM_NO_FFI=1 "))
end

---------------------------------------------------------------- nginx
local NGX = {}
local function nginx_bench()
  local root = os.getenv("SHM_NGINX_ROOT") or ""
  local function exists(p) local f = io.open(p) if f then f:close() end return f ~= nil end
  local function find(rel)
    for _, r in ipairs({ root, "" }) do if exists(r .. rel) then return r .. rel, r end end
  end
  local nginx = (exists("/usr/sbin/nginx") and "/usr/sbin/nginx")
  local ndk = find("/usr/lib/nginx/modules/ndk_http_module.so")
  local mod, modroot = find("/usr/lib/nginx/modules/ngx_http_lua_module.so")
  local resty = find("/usr/share/lua/5.1/resty/core.lua")
  if not (nginx and ndk and mod and resty and select(2, sh("command -v curl"))) then
    return "skipped (nginx, its Lua module, resty.core or curl missing)"
  end
  local dir = os.tmpname()
  os.remove(dir)
  local top = HERE .. "/.."
  assert(sh("mkdir -m 0755 " .. q(dir) .. " " .. q(dir .. "/lib") .. " && cp -R " .. q(top .. "/lua") .. " "
    .. q(dir) .. " && cp -R " .. q(top .. "/build/luajit/shm") .. " " .. q(dir .. "/lib")
    .. " && chmod -R a+rX " .. q(dir)))
  local port = 20000 + (tonumber(io.open("/proc/self/stat"):read("*n")) % 30000)
  local N = math.floor(1e6 * SCALE)
  local conf = [[
daemon on; worker_processes 1; user nobody nogroup;
pid DIR/nginx.pid; error_log DIR/error.log;
load_module NDK; load_module MOD;
events { worker_connections 16; }
http {
  access_log off;
  client_body_temp_path DIR/b; proxy_temp_path DIR/p; fastcgi_temp_path DIR/f;
  uwsgi_temp_path DIR/u; scgi_temp_path DIR/s;
  lua_package_path "DIR/lua/?.lua;RESTY;;";
  lua_package_cpath "DIR/lib/?.so;;";
  lua_shared_dict ngxd 1m;
  server {
    listen 127.0.0.1:PORT;
    location /bench {
      content_by_lua_block {
        local ffi = require "ffi"
        local shm = require "shm"
        local ts = ffi.new("struct { long s; long ns; }")
        pcall(ffi.cdef, "int clock_gettime(int, void *);")
        local function now() ffi.C.clock_gettime(1, ts) return tonumber(ts.s) + tonumber(ts.ns) * 1e-9 end
        local d = assert(shm.dict.create(shm.PRIVATE, 1048576)) d:remove()
        local nd = ngx.shared.ngxd
        local v = "a value of 24 bytes....."
        d:set("hot", v) nd:set("hot", v)
        local function t(f, n) f(math.floor(n / 10)) local t0 = now() f(n) return (now() - t0) / n * 1e9 end
        local sink
        local loops = {
          { "get", function(n) local x for _ = 1, n do x = d:get("hot") end sink = x end,
                   function(n) local x for _ = 1, n do x = nd:get("hot") end sink = x end },
          { "set", function(n) for i = 1, n do d:set("n", i) end end,
                   function(n) for i = 1, n do nd:set("n", i) end end },
          { "incr", function(n) for _ = 1, n do d:incr("c", 1, 0) end end,
                    function(n) for _ = 1, n do nd:incr("c", 1, 0) end end },
        }
        for _, mode in ipairs({ "jit", "nojit" }) do
          if mode == "nojit" then jit.off() jit.flush() end
          local n = mode == "jit" and N or math.floor(N / 10)
          for _, l in ipairs(loops) do
            ngx.say(l[1], " ", mode, "\t", string.format("%.2f\t%.2f", t(l[2], n), t(l[3], n)))
          end
        end
        jit.on()
        ngx.say("ffi\t", tostring(package.loaded["shm.ffi"] ~= nil))
        d:detach()
      }
    }
  }
}
]]
  conf = conf:gsub("[A-Z]+", { DIR = dir, NDK = ndk, MOD = mod, RESTY = resty:gsub("resty/core%.lua$", "?.lua"),
                               PORT = tostring(port), N = tostring(N) })
  local f = assert(io.open(dir .. "/nginx.conf", "w"))
  f:write(conf)
  f:close()
  local ld = modroot ~= "" and ("LD_LIBRARY_PATH=" .. q(modroot .. "/usr/lib/x86_64-linux-gnu") .. " ") or ""
  local out, ok = sh(ld .. nginx .. " -p " .. q(dir) .. " -c " .. q(dir .. "/nginx.conf")
    .. " -e " .. q(dir .. "/error.log"))
  local result
  if ok then
    for _ = 1, ROUNDS do
      local body = sh("curl -s --max-time 120 http://127.0.0.1:" .. port .. "/bench")
      for name, a, b in body:gmatch("([^\t\n]+)\t([%d.]+)\t([%d.]+)") do
        NGX[name] = NGX[name] or { {}, {} }
        table.insert(NGX[name][1], tonumber(a))
        table.insert(NGX[name][2], tonumber(b))
      end
      if not body:find("ffi\ttrue", 1, true) then result = "failed: " .. body end
    end
    local pf = io.open(dir .. "/nginx.pid")
    local pid = pf and pf:read("*n")
    if pf then pf:close() end
    if pid then
      sh("kill -QUIT " .. pid)
      for _ = 1, 100 do
        if not exists("/proc/" .. pid) then break end
        sh("sleep 0.05")
      end
    end
  else
    result = "failed to start nginx: " .. out
  end
  sh("rm -rf " .. q(dir))
  return result
end
local ngx_note = nginx_bench()

---------------------------------------------------------------- report
local lines = {}
local function say(s) lines[#lines + 1] = s print(s) end
local function ns(v) return v and string.format("%.1f ns", v) or "-" end
local function ratio(a, b) return (a and b) and string.format("%.2f", a / b) or "-" end
say(string.format("## LuaJIT FFI fast paths (%s, %s, median of %d)", jit.version, os.date("!%Y-%m-%d"), ROUNDS))
say("")
say("Per call, one process.  FFI/C API < 1 means the FFI path is faster.")
say("")
say("| operation | FFI, JIT | C API, JIT | FFI/C API | FFI, JIT off | C API, JIT off | FFI/C API (JIT off) |")
say("|---|---|---|---|---|---|---|")
for _, name in ipairs(names) do
  local a, b = get("ffi jit", name), get("capi jit", name)
  local c, e = get("ffi nojit", name), get("capi nojit", name)
  say(string.format("| %s | %s | %s | %s | %s | %s | %s |", name, ns(a), ns(b), ratio(a, b), ns(c), ns(e), ratio(c, e)))
end
local read, floor = get("ffi jit", "seg:read(0, 64)"), get("ffi jit", "floor: ffi.string 64 B")
say("")
say(string.format("seg:read(0, 64) through the FFI: %s, %.2fx ffi.string of 64 bytes (%s)", ns(read),
  read / floor, ns(floor)))
local qf, qc = get("ffi", "queue"), get("capi", "queue")
say(string.format("shm.queue, 64-byte messages, writer and reader processes: FFI %.2f M/s, C API %.2f M/s"
  .. " (%.2fx); %.2fx the 7.4 M/s of bench/results/results-luajit.md", qf / 1e6, qc / 1e6, qf / qc, qf / 7.4e6))
say("")
if ngx_note then
  say("Inside nginx: " .. ngx_note)
else
  say("Inside nginx (one worker, one content_by_lua_block timing both, side by side):")
  say("")
  say("| operation | shm.dict | ngx.shared.DICT | shm.dict / ngx.shared.DICT |")
  say("|---|---|---|---|")
  for _, name in ipairs({ "get jit", "set jit", "incr jit", "get nojit", "set nojit", "incr nojit" }) do
    local v = NGX[name]
    if v then
      local a, b = median(v[1]), median(v[2])
      local label = name:gsub(" nojit$", " (JIT off)"):gsub(" jit$", "")
      say(string.format("| %s | %s | %s | %s |", label, ns(a), ns(b), ratio(a, b)))
    end
  end
end
local f = io.open(HERE .. "/results/ffi.md", "w")
if f then
  f:write(table.concat(lines, "\n"), "\n")
  f:close()
end
