-- Section 4's servers: our own nginx (with ngx_http_lua) on a loopback port
-- and our own redis-server on a unix socket, each in its own temp dir, run in
-- the foreground as our children (so they share our process group), stopped by
-- the pid they wrote, and their dirs removed.  Never a system service.
--   local s, why = servers.nginx(bench_dir)   s.url, s.info, s.stop()
--   local s, why = servers.redis()            s.sock, s.stop()
-- Both return nil and the reason when the software is missing or will not start.
local lib = require "lib"
local M = {}

local q = lib.q
local sh = lib.sh
local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end
local function slurp(path)
  local f = io.open(path)
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end
local function sleep(s) sh("sleep " .. s) end

local function tempdir()
  local out, ok = sh("mktemp -d /tmp/lshm-bench-XXXXXX")
  return ok and out:match("^(%S+)")
end

-- A foreground child started through popen: the shell prints its pid and
-- execs the server (same pid; until we reap it, it stays ours, even dead).
-- Returns the stopper: SIGTERM, wait for the exit, remove the dir.
local function spawn(cmd, dir)
  local p = assert(io.popen("echo $$; exec " .. cmd .. " >" .. q(dir .. "/stdout") .. " 2>&1", "r"))
  local pid = tonumber(p:read("*l"))
  local stopped = false
  return function()
    if stopped then return end
    stopped = true
    if pid then sh("kill -TERM " .. pid) end
    p:close() -- waits for the server to exit
    sh("rm -rf " .. q(dir))
  end
end

-- Where the lua module is: the system's, or a private copy unpacked by
-- bench/deps.sh from Debian's packages when they cannot be installed.
local function lua_module(bench)
  local sys = "/usr/lib/nginx/modules/ngx_http_lua_module.so"
  if exists(sys) and exists("/usr/share/lua/5.1/resty/core.lua") then
    return { ndk = "/usr/lib/nginx/modules/ndk_http_module.so", lua = sys, path = "", env = "",
      source = "the installed packages" }
  end
  local root = bench .. "/../build/bench/openresty/root"
  if exists(root .. "/usr/lib/nginx/modules/ngx_http_lua_module.so") then
    local ndk = root .. "/usr/lib/nginx/modules/ndk_http_module.so"
    return { ndk = exists(ndk) and ndk or "/usr/lib/nginx/modules/ndk_http_module.so",
      lua = root .. "/usr/lib/nginx/modules/ngx_http_lua_module.so",
      path = root .. "/usr/share/lua/5.1/?.lua;",
      env = "env LD_LIBRARY_PATH=" .. q(root .. "/usr/lib/x86_64-linux-gnu") .. " ",
      source = "Debian's packages unpacked under build/bench/openresty by make bench-deps (they need " ..
        "OpenResty's luajit2, which cannot be installed beside Debian's luajit without removing it)" }
  end
  return nil
end

local CONF = [[
worker_processes 2;
daemon off;
pid DIR/nginx.pid;
error_log DIR/error.log warn;
load_module NDK;
load_module LUAMOD;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path DIR/body;
  proxy_temp_path DIR/proxy;
  fastcgi_temp_path DIR/fastcgi;
  uwsgi_temp_path DIR/uwsgi;
  scgi_temp_path DIR/scgi;
  lua_package_path 'LUAPATH;;';
  lua_shared_dict bench CAPACITY;
  lua_shared_dict locks 1m;
ZONES  init_worker_by_lua_block { require("ngx_dict").init_worker() }
  server {
    listen 127.0.0.1:PORT;
    location = /info { content_by_lua_block { require("ngx_dict").info() } }
    location = /op { content_by_lua_block { require("ngx_dict").op() } }
    location = /pair { content_by_lua_block { require("ngx_dict").pair() } }
    location = /lock { content_by_lua_block { require("ngx_lock").run() } }
    location = /scale { content_by_lua_block { require("ngx_dict").scale() } }
  }
}
]]

function M.nginx(bench, capacity, zones)
  if not sh("command -v nginx") then return nil, "nginx not installed" end
  if not sh("command -v curl") then return nil, "curl not installed" end
  local mod = lua_module(bench)
  if not mod then
    return nil, "ngx_http_lua_module / lua-resty-core not installed (make bench-deps, as root, installs them " ..
      "or unpacks a private copy)"
  end
  local why = "nginx did not start"
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 1000)
  for _ = 1, 5 do -- a few random ports, in case one is taken
    local dir = tempdir()
    if not dir then return nil, "mktemp failed" end
    local port = 20000 + math.random(0, 39999)
    local zl = {} -- more lua_shared_dict zones: { { name, bytes }, ... }
    for _, z in ipairs(zones or {}) do zl[#zl + 1] = string.format("  lua_shared_dict %s %d;\n", z[1], z[2]) end
    local conf = CONF:gsub("[A-Z]+", { DIR = dir, NDK = mod.ndk, LUAMOD = mod.lua, PORT = tostring(port),
      LUAPATH = bench .. "/?.lua;" .. mod.path, CAPACITY = tostring(capacity), ZONES = table.concat(zl) })
    local f = assert(io.open(dir .. "/nginx.conf", "w"))
    f:write(conf)
    f:close()
    local stop = spawn(mod.env .. "nginx -p " .. q(dir) .. " -c " .. q(dir .. "/nginx.conf") ..
      " -e " .. q(dir .. "/error.log"), dir)
    local url = "http://127.0.0.1:" .. port
    for _ = 1, 100 do
      local out, ok = sh("curl -s --max-time 2 " .. url .. "/info")
      if ok and out:match("LuaJIT") then
        return { url = url, info = out:gsub("%s+$", ""), source = mod.source, stop = stop }
      end
      local log = slurp(dir .. "/error.log") .. slurp(dir .. "/stdout")
      if log:match("%[emerg%]") then
        why = "nginx: " .. (log:match("%[emerg%][^\n]*") or log)
        break
      end
      sleep(0.05)
    end
    stop()
    if not why:match("in use") then break end
  end
  return nil, why
end

function M.redis()
  for _, c in ipairs({ "redis-server", "redis-benchmark", "redis-cli" }) do
    if not sh("command -v " .. c) then return nil, c .. " not installed" end
  end
  local dir = tempdir()
  if not dir then return nil, "mktemp failed" end
  local sock = dir .. "/r.sock"
  local stop = spawn("redis-server --port 0 --unixsocket " .. q(sock) .. " --unixsocketperm 700 --save '' " ..
    "--appendonly no --daemonize no --pidfile " .. q(dir .. "/r.pid") .. " --logfile " .. q(dir .. "/r.log") ..
    " --dir " .. q(dir), dir)
  for _ = 1, 100 do
    if sh("redis-cli -s " .. q(sock) .. " ping"):match("PONG") then
      return { sock = sock, stop = stop }
    end
    sleep(0.05)
  end
  local log = slurp(dir .. "/r.log") .. slurp(dir .. "/stdout")
  stop()
  return nil, "redis-server did not start: " .. log:sub(1, 300)
end

return M
