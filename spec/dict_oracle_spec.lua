-- ngx.shared.DICT as the oracle: seeded random sequences of every method
-- (spec/dictseq.lua) run against an ngx.shared.DICT in our own nginx and
-- against a shm.dict (and the pure-Lua model), every call's results compared.
-- The documented differences are excused in ONE table, dictseq.DIFFERENCES.
--
-- nginx runs from a temporary directory on a free loopback port, one worker,
-- and is stopped by its pid. Each request carries a batch of sequences (a
-- Lua chunk); the worker plays each on a zone emptied first (flush_all,
-- flush_expired(0)) and answers one canonical line per call.
--
-- SHM_SEED: the first seed (default 1); SHM_ORACLE_SEQS: how many sequences
-- (default 300; `make prove` runs more). SHM_NGINX_ROOT as in nginx_spec.lua.
local shm = require "shm"
local H = require "helpers"
local S = require "dictseq"

local q = H.shellquote
local ROOTS = { os.getenv("SHM_NGINX_ROOT"), "" }
local ARCH = "/usr/lib/x86_64-linux-gnu"

local function find(rel)
  for _, root in pairs(ROOTS) do
    local f = io.open(root .. rel)
    if f then f:close() return root .. rel, root end
  end
end

local function which(cmd)
  local out = H.sh("command -v " .. cmd .. " 2>/dev/null || true")
  return out:match("^(%S+)")
end

local nginx = which("nginx") or (io.open("/usr/sbin/nginx") and "/usr/sbin/nginx")
local ndk = find("/usr/lib/nginx/modules/ndk_http_module.so")
local lua_mod, lua_root = find("/usr/lib/nginx/modules/ngx_http_lua_module.so")
local resty = find("/usr/share/lua/5.1/resty/core.lua")
local why = not nginx and "nginx is not installed"
  or not ndk and "ndk_http_module.so (libnginx-mod-http-ndk) is missing"
  or not lua_mod and "ngx_http_lua_module.so (libnginx-mod-http-lua) is missing"
  or not resty and "resty.core (lua-resty-core) is missing"
  or not which("curl") and "curl is missing"

if why then
  describe("shm.dict against ngx.shared.DICT", function() pending(why) end)
  return
end

local ld = "env -u LD_PRELOAD " .. (lua_root ~= "" and ("LD_LIBRARY_PATH=" .. q(lua_root .. ARCH) .. " ") or "")
local curl = "env -u LD_PRELOAD curl -s --max-time 300 "
local resty_path = resty:gsub("resty/core%.lua$", "?.lua")

local CAP, SMALL = 64 * 1024 * 1024, 256 * 1024

local CONF = [[
daemon on;
master_process on;
worker_processes 1;
user nobody nogroup;
pid DIR/nginx.pid;
error_log DIR/error.log notice;
load_module NDK;
load_module LUAMOD;
events { worker_connections 16; }
http {
  access_log off;
  client_body_temp_path DIR/body;
  proxy_temp_path DIR/proxy;
  fastcgi_temp_path DIR/fastcgi;
  uwsgi_temp_path DIR/uwsgi;
  scgi_temp_path DIR/scgi;
  client_max_body_size 0;
  client_body_buffer_size 256m;
  lua_package_path "LUAPATH";
  lua_shared_dict oracle BIGk;
  lua_shared_dict small SMALLk;
  server {
    listen 127.0.0.1:PORT;
    location /run {
      content_by_lua_block {
        local S = require "dictseq"
        local d = ngx.shared[ngx.var.arg_dict]
        ngx.req.read_body()
        local seqs = assert(loadstring(assert(ngx.req.get_body_data(), "no body")))()
        local out = {}
        for _, ops in ipairs(seqs) do
          d:flush_all()
          d:flush_expired(0)
          out[#out + 1] = table.concat(S.run(d, ops, ngx.sleep), "\n")
        end
        ngx.print(table.concat(out, "\n==\n"))
      }
    }
  }
}
]]

describe("shm.dict against ngx.shared.DICT #nginx", function()
  local dir, pidfile, port

  local function master()
    local f = pidfile and io.open(pidfile)
    local pid = f and tonumber(f:read("*a"))
    if f then f:close() end
    return pid
  end

  local function errorlog()
    local f = io.open(dir .. "/error.log")
    local s = f and f:read("*a") or ""
    if f then f:close() end
    return s
  end

  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(H.exec("mkdir -m 0755 " .. q(dir) .. " && cp " .. q(H.root .. "/spec/dictseq.lua") .. " " .. q(dir)
      .. " && chmod -R a+rX " .. q(dir)))
    pidfile = dir .. "/nginx.pid"
    local started, out
    for _ = 1, 10 do
      port = math.random(20000, 60000)
      local conf = CONF:gsub("[A-Z]+", {
        DIR = dir, NDK = ndk, LUAMOD = lua_mod, LUAPATH = dir .. "/?.lua;" .. resty_path .. ";;",
        PORT = tostring(port), BIG = tostring(math.floor(CAP / 1024)), SMALL = tostring(math.floor(SMALL / 1024)),
      })
      local f = assert(io.open(dir .. "/nginx.conf", "w"))
      f:write(conf)
      f:close()
      local rc
      out, rc = H.sh(ld .. q(nginx) .. " -p " .. q(dir) .. " -c " .. q(dir .. "/nginx.conf")
        .. " -e " .. q(dir .. "/error.log"))
      if rc == 0 then started = true break end
      if not (out .. errorlog()):find("Address already in use", 1, true) then break end
    end
    assert(started, "nginx did not start: " .. tostring(out) .. errorlog())
  end)

  teardown(function()
    local pid = master()
    if pid then
      H.kill(pid, "QUIT")
      if not H.until_true(function() return H.state(pid) == nil end, 10) then H.kill(pid, "KILL") end
    end
    if dir then H.exec("rm -rf " .. q(dir)) end
    H.cleanup()
  end)

  -- ngx's results for a batch of sequences
  local function oracle(seqs, zone)
    local body = H.tmpfile()
    local f = assert(io.open(body, "wb"))
    f:write(S.serialize(seqs))
    f:close()
    local out, rc = H.sh(curl .. "--data-binary @" .. q(body) .. " " .. q("http://127.0.0.1:" .. port
      .. "/run?dict=" .. zone))
    os.remove(body)
    assert(rc == 0 and not out:find("<html>", 1, true), "nginx: " .. out:sub(1, 400) .. errorlog():sub(-2000))
    local res = {}
    for chunk in (out .. "\n==\n"):gmatch("(.-)\n==\n") do
      local lines = {}
      for line in (chunk .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = line end
      res[#res + 1] = lines
    end
    return res
  end

  local timer = shm.create(shm.PRIVATE, 8)
  timer:remove()
  local function sleep(s) timer:wait(0, 0, s) end

  -- play `count` sequences from `seed` on both sides (and the model), compare
  local function prove(seed, count, opts, zone, cap)
    local calls, batch = 0, 20
    for b = 0, count - 1, batch do
      local seqs, expects = {}, {}
      for i = 1, math.min(batch, count - b) do
        local o = {}
        for k, v in pairs(opts) do o[k] = v end
        o.short = o.short or (seed + b + i) % 4 == 0
        seqs[i], expects[i] = S.generate(seed + b + i, o)
      end
      local ngx = oracle(seqs, zone)
      for i, ops in ipairs(seqs) do
        local s = seed + b + i
        local d = assert(shm.dict.create(shm.PRIVATE, cap))
        d:segment():remove()
        local got = S.run(d, ops, sleep)
        d:detach()
        local bad = S.compare(ops, ngx[i], got)
        if bad then
          error(string.format("seed %d (SHM_SEED=%d), call %d of %d differs from ngx.shared.DICT:\n%s", s, s, bad,
            #ops, S.trace(ops, ngx[i], got, bad, { "ngx", "shm" })), 0)
        end
        if not opts.evict then
          bad = S.compare(ops, ngx[i], expects[i])
          if bad then
            error(string.format("seed %d: the model differs from ngx.shared.DICT at call %d:\n%s", s, bad,
              S.trace(ops, ngx[i], expects[i], bad, { "ngx", "model" })), 0)
          end
        end
        calls = calls + #ops
      end
    end
    return calls
  end

  local SEED = tonumber(os.getenv("SHM_SEED")) or 1
  local SEQS = tonumber(os.getenv("SHM_ORACLE_SEQS")) or 300

  it("gives ngx.shared.DICT's results, call for call, over random sequences", function()
    local calls = prove(SEED, SEQS, { ngx = true }, "oracle", CAP)
    print(string.format("\n    oracle: seed %d, %d sequences, %d calls compared with ngx.shared.DICT",
      SEED, SEQS, calls))
  end)

  it("gives ngx.shared.DICT's results on hand-picked edges", function()
    local ngx = oracle({ S.EDGES }, "oracle")[1]
    local d = assert(shm.dict.create(shm.PRIVATE, CAP))
    d:segment():remove()
    local got = S.run(d, S.EDGES, sleep)
    d:detach()
    local diffs, known = S.edges(ngx, got, { "ngx", "shm" })
    if #diffs > 0 then print("\n    edges that differ from ngx.shared.DICT:\n" .. table.concat(diffs, "\n")) end
    assert(#diffs == known, "new differences from ngx.shared.DICT (above)")
    local mdiffs = S.edges(ngx, S.run(S.model(CAP), S.EDGES, sleep), { "ngx", "model" })
    assert(#mdiffs == 0, "the model differs from ngx.shared.DICT:\n" .. table.concat(mdiffs, "\n"))
  end)

  it("over sequences that reach today's known bugs #known", function()
    S.known(pending, "long lists, flags >= 2^31", prove, SEED + 900000, math.max(10, math.floor(SEQS / 10)),
      { ngx = true, known = {} }, "oracle", CAP)
  end)

  it("evicts as ngx.shared.DICT does, loosely (small dicts)", function()
    local n = math.max(5, math.floor(SEQS / 30))
    local calls = prove(SEED + 1000000, n, { ngx = true, evict = true, n = 300 }, "small", SMALL)
    print(string.format("\n    oracle (eviction): seed %d, %d sequences, %d calls", SEED + 1000000, n, calls))
  end)
end)
