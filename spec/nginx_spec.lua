-- lua-shm inside nginx (OpenResty's Lua module): two nginx workers and a
-- lua5.4 process outside nginx share a shm.dict and a shm.queue.  The
-- outside process pushes jobs that the workers pop and serve; counters move
-- with incr from both sides (the workers' HTTP requests and the outside
-- process); the totals add up, and still do after a reload (HUP).  nginx runs from a temporary directory on a
-- free loopback port with the module of build/luajit, and is stopped by its
-- pid (H.nginx_prefix, H.nginx_start).  Pending where nginx, its Lua module
-- or curl is missing (H.nginx; SHM_NGINX_ROOT: a root to look in first).
local shm = require "shm"
local H = require "helpers"

local q = H.shellquote
local NGX, why = H.nginx()
why = why or not H.which("lua5.4") and "lua5.4 is missing"

if why then
  describe("lua-shm inside nginx", function() pending(why) end)
  return
end

local curl = NGX.curl .. "--max-time 30 "

local CONF = [[
daemon on;
master_process on;
user nobody nogroup;
worker_processes 2;
pid DIR/nginx.pid;
error_log DIR/error.log notice;
load_module NDK;
load_module LUAMOD;
env SHM_NO_FFI;
events { worker_connections 64; }
http {
  PRIVATE
  lua_package_path "LUAPATH";
  lua_package_cpath "DIR/lib/?.so;;";
  init_by_lua_block { require "shm" }
  init_worker_by_lua_block {
    -- after the fork: each worker attaches its own handles
    local shm = require "shm"
    local d = assert(shm.dict.open(DKEY))
    local q = assert(shm.queue.open(QKEY))
    package.loaded["spec.state"] = { d = d, q = q }
    local pid = ngx.worker.pid()
    assert(d:set("worker:" .. pid, true))
    assert(d:incr("workers", 1, 0))
    local function serve(premature)
      if premature then return end
      while not ngx.worker.exiting() do
        local job = q:pop(0)
        if job then
          d:incr("served", 1, 0)
          d:incr("sum", tonumber(job), 0)
          d:incr("by:" .. pid, 1, 0)
        else
          ngx.sleep(0.001)
        end
      end
    end
    assert(ngx.timer.at(0, serve))
  }
  server {
    listen 127.0.0.1:PORT;
    location /hit {
      content_by_lua_block {
        local s = package.loaded["spec.state"]
        ngx.say((s.d:incr("hits", 1, 0)))
      }
    }
    location /stat {
      content_by_lua_block {
        local s = package.loaded["spec.state"]
        local ffi = package.loaded["shm.ffi"]
        ngx.say("ffi=", tostring(ffi ~= nil and ffi.active), " jit=", tostring(jit.status()))
      }
    }
  }
}
]]

-- the outside process: pushes the jobs and counts hits of its own
local OUTSIDE = [[
local shm = require "shm"
local dkey, qkey, n = tonumber(arg[1]), tonumber(arg[2]), tonumber(arg[3])
local d = assert(shm.dict.open(dkey))
local q = assert(shm.queue.open(qkey))
local timer = assert(shm.create(shm.PRIVATE, 8))
timer:remove()
for i = 1, n do
  assert(q:push(tostring(i), 10))
  assert(d:incr("hits", 1, 0))
  if i % 200 == 0 then timer:wait(0, 0, 0.002) end -- (let both workers find jobs)
end
print(string.format("pushed %d, %s", n, _VERSION))
]]

describe("lua-shm inside nginx #nginx", function()
  local ngx, dir, master, errorlog, workers -- workers: pids, as the workers wrote them in the dict

  before_each(function()
    ngx = H.nginx_prefix()
    dir, master, errorlog, workers = ngx.dir, ngx.master, ngx.errorlog, ngx.workers
  end)
  after_each(function()
    ngx.stop()
    H.cleanup()
  end)

  it("shares a dict and a queue between two workers and a lua5.4 process outside nginx", function()
    -- the module for LuaJIT, and for the outside lua5.4
    for _, lua in ipairs({ "luajit", "lua5.4" }) do
      local out, rc = H.sh(H.make .. " -C " .. q(H.root) .. " LUA=" .. lua)
      assert.equal(0, rc, out)
    end
    -- the workers run as nobody: the objects are theirs, and the module is
    -- copied where they can read it (the checkout may be private)
    local nobody = tonumber((H.sh("id -u nobody")))
    local dkey, qkey, N, M = H.key(), H.key(), 4000, 200
    local d = assert(shm.dict.create(dkey, 1024 * 1024))
    local jobs = assert(shm.queue.create(qkey, 64 * 1024))
    assert(d:segment():chown(nobody))
    assert(jobs:segment():chown(nobody))
    assert(H.exec("mkdir -m 0755 " .. q(dir .. "/lib") .. " && cp -R " .. q(H.root .. "/lua")
      .. " " .. q(dir) .. " && cp -R " .. q(H.root .. "/build/luajit/shm") .. " " .. q(dir .. "/lib")
      .. " && chmod -R a+rX " .. q(dir)))
    local port = H.nginx_start(NGX, ngx, CONF, {
      LUAPATH = dir .. "/lua/?.lua;" .. NGX.resty_path .. ";;", DKEY = tostring(dkey), QKEY = tostring(qkey),
    })
    -- both workers attached
    assert.is_true(H.until_true(function() return d:get("workers") == 2 end, 10), errorlog())
    for _, k in ipairs(d:get_keys(0)) do workers[#workers + 1] = k:match("^worker:(%d+)$") end
    local stat = H.sh(curl .. "http://127.0.0.1:" .. port .. "/stat")
    local ffi = os.getenv("SHM_NO_FFI") ~= "1"
    assert.equal("ffi=" .. tostring(ffi) .. " jit=true\n", stat:gsub(" jit=true.*", " jit=true\n"))
    -- the outside process pushes while HTTP requests count hits in the workers
    local env = { LUA_PATH = H.env.LUA_PATH, LUA_CPATH = H.root .. "/build/lua5.4/?.so;;" }
    local outside = H.spawn(OUTSIDE, { dkey, qkey, N }, { interpreter = "lua5.4", env = env })
    local hits = H.sh(curl .. "'http://127.0.0.1:" .. port .. "/hit?[1-" .. M .. "]'")
    local o, rc = outside:finish()
    assert.equal(0, rc, o)
    assert.matches("pushed " .. N .. ", Lua 5.4", o)
    local _, lines = hits:gsub("%d+\n", "")
    assert.equal(M, lines, hits)
    -- every job served once, every hit counted, by both workers
    assert.is_true(H.until_true(function() return d:get("served") == N end, 20),
      "served " .. tostring(d:get("served")) .. errorlog())
    assert.equal(N * (N + 1) / 2, d:get("sum"))
    assert.equal(N + M, d:get("hits"))
    local serving, total = 0, 0
    for _, k in ipairs(d:get_keys(0)) do
      local pid = k:match("^by:(%d+)$")
      if pid then
        serving = serving + 1
        total = total + d:get(k)
        assert.is_true(d:get("worker:" .. pid), k)
      end
    end
    assert.equal(N, total)
    assert.equal(2, serving, "jobs served by one worker only")
    assert.equal(0, jobs:stat().count)
    assert.is_nil(errorlog():find("%[error%]"), errorlog())
    assert.is_nil(errorlog():find("%[alert%]"), errorlog())
    -- a reload (HUP): new workers reopen the objects, which kept everything
    local pid = master()
    H.kill(pid, "HUP")
    assert.is_true(H.until_true(function() return d:get("workers") == 4 end, 10), errorlog())
    for _, k in ipairs(d:get_keys(0)) do workers[#workers + 1] = k:match("^worker:(%d+)$") end
    assert.is_true(jobs:push("1000000"))
    hits = H.sh(curl .. "'http://127.0.0.1:" .. port .. "/hit?[1-" .. M .. "]'")
    _, lines = hits:gsub("%d+\n", "")
    assert.equal(M, lines, hits)
    assert.is_true(H.until_true(function() return d:get("served") == N + 1 end, 10), errorlog())
    assert.equal(N * (N + 1) / 2 + 1000000, d:get("sum"))
    assert.equal(N + 2 * M, d:get("hits"))
    -- stopped by its pid: the workers detach, the objects stay for us to remove
    H.kill(pid, "QUIT")
    assert.is_true(H.until_true(function() return H.state(pid) == nil end, 10))
    assert.equal(N + 2 * M, d:get("hits"))
    d:remove() d:detach()
    jobs:remove() jobs:detach()
  end)
end)
