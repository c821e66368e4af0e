-- README's OpenResty nginx.conf runs as written: the spec takes it from
-- between its markers in README.md, installs lua-shm the way the README says
-- (make install LUA=luajit, and make install for lua5.4, here under a DESTDIR),
-- starts nginx with the README's command line from a temporary prefix and
-- stops it the same way (by pid if that fails).  Only the install directory,
-- the port and the dict's name are changed, so that runs never clash.
-- Pending where nginx, its Lua module, lua-resty-core, curl or lua5.4 is missing.
local shm = require "shm"
local H = require "helpers"

local q = H.shellquote

local function has(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end
local function which(cmd) return (H.sh("command -v " .. cmd .. " 2>/dev/null || true")):match("^(%S+)") end

local nginx = which("nginx") or (has("/usr/sbin/nginx") and "/usr/sbin/nginx")
local why = not nginx and "nginx is not installed"
  or not has("/usr/lib/nginx/modules/ndk_http_module.so") and "libnginx-mod-http-ndk is missing"
  or not has("/usr/lib/nginx/modules/ngx_http_lua_module.so") and "libnginx-mod-http-lua is missing"
  or not has("/usr/share/lua/5.1/resty/core.lua") and "lua-resty-core is missing"
  or not which("curl") and "curl is missing"
  or not which("lua5.4") and "lua5.4 is missing"

local function readme_conf()
  local f = assert(io.open(H.root .. "/README.md"))
  local text = f:read("*a")
  f:close()
  return text:match("<!%-%- nginx%.conf: [^\n]*%-%->\n```nginx\n(.-)```\n<!%-%- end of nginx%.conf %-%->")
end

describe("README's nginx.conf #nginx", function()
  it("is between its markers, with what it takes to run beside a system nginx", function()
    local conf = readme_conf()
    assert.is_string(conf, "no nginx.conf between the markers in README.md")
    for _, needed in ipairs({ "load_module /usr/lib/nginx/modules/ndk_http_module.so;",
        "load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;", "\nevents {}",
        "listen 127.0.0.1:8080;", "\npid nginx.pid;", "\nerror_log error.log",
        "lua_package_path  \"/usr/local/share/lua/5.1/?.lua;;\";",
        "lua_package_cpath \"/usr/local/lib/lua/5.1/?.so;;\";", "\"/app-cache\"" }) do
      assert.truthy(conf:find(needed, 1, true), needed)
    end
  end)

  if why then
    pending("runs as written: " .. why)
    return
  end

  local ngx
  before_each(function() ngx = H.nginx_prefix() end)
  after_each(function()
    ngx.stop()
    H.cleanup()
  end)

  it("runs as written: workers and a lua5.4 process outside nginx count on one dict", function()
    local dir, errorlog, start = ngx.dir, ngx.errorlog, false
    local root = dir .. "/root"
    -- installed as the README says, for nginx's LuaJIT and for lua5.4
    for _, lua in ipairs({ "luajit", "lua5.4" }) do
      local out, rc = H.sh(H.make .. " -C " .. q(H.root) .. " install LUA=" .. lua .. " DESTDIR=" .. q(root))
      assert.equal(0, rc, out)
    end
    assert(H.exec("chmod -R a+rX " .. q(dir)))
    local name = H.name()
    -- (as a user runs it: without the sanitizer runtime make check-asan preloads,
    -- and without the SHM_NO_FFI of a suite run for the C API paths)
    local cmd = "cd " .. q(dir) .. " && env -u LD_PRELOAD -u SHM_NO_FFI " .. q(nginx)
      .. " -p \"$PWD\" -e error.log -c nginx.conf"
    local port, out
    for _ = 1, 10 do -- a free port: nginx says when it is not
      port = math.random(20000, 60000)
      local conf = readme_conf():gsub("/usr/local/", root .. "/usr/local/")
        :gsub("127%.0%.0%.1:8080", "127.0.0.1:" .. port):gsub("\"/app%-cache\"", "\"" .. name .. "\"")
      local f = assert(io.open(dir .. "/nginx.conf", "w"))
      f:write(conf)
      f:close()
      local rc
      out, rc = H.sh(cmd)
      if rc == 0 then start = true break end
      if not (out .. errorlog()):find("Address already in use", 1, true) then break end
    end
    assert.is_true(start, "nginx did not start: " .. tostring(out) .. errorlog())
    local curl = "env -u LD_PRELOAD curl -s --max-time 30 "
    local M, N = 100, 50
    local hits = H.sh(curl .. "'http://127.0.0.1:" .. port .. "/hit?[1-" .. M .. "]'")
    local _, lines = hits:gsub("%d+\n", "")
    assert.equal(M, lines, hits .. errorlog())
    -- the outside process, with the module as installed for lua5.4
    local env = {
      LUA_PATH = root .. "/usr/local/share/lua/5.4/?.lua;;",
      LUA_CPATH = root .. "/usr/local/lib/lua/5.4/?.so;;",
    }
    local o, rc = H.run(string.format([[
      local d = assert(require("shm").dict.open(%q))
      local v
      for _ = 1, %d do v = d:incr("hits", 1) end
      print(v, math.type(d:get("hits")))
    ]], name, N), nil, { interpreter = "lua5.4", env = env })
    assert.equal(0, rc, o)
    -- whole numbers that LuaJIT's workers counted are integers for lua5.4
    assert.equal((M + N) .. "\tinteger\n", o)
    assert.equal(tostring(M + N + 1) .. "\n", H.sh(curl .. "http://127.0.0.1:" .. port .. "/hit"))
    assert.is_nil(errorlog():find("%[error%]"), errorlog())
    assert.is_nil(errorlog():find("%[alert%]"), errorlog())
    -- stopped as the README says
    local pid = ngx.master()
    out, rc = H.sh(cmd .. " -s quit")
    assert.equal(0, rc, out)
    assert.is_true(H.until_true(function() return H.state(pid) == nil end, 10))
    local d = assert(shm.dict.open(name))
    assert.equal(M + N + 1, d:get("hits"))
    d:remove()
    d:detach()
  end)
end)
