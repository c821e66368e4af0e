-- Which build the suite runs against, and the one exported symbol.
local H = require "helpers"

describe("the module", function()
  it("is loaded from the build the suite was pointed at, here and in children", function()
    local want = H.env.LUA_CPATH:gsub(";;$", ""):gsub("%?", "shm/core")
    local here = H.searchpath("shm.core", package.cpath)
    assert.equal(want:gsub("^.*/build/", "build/"), here:gsub("^.*/build/", "build/"))
    local out, rc = H.run(H.SEARCHPATH .. [[io.write(searchpath("shm.core", package.cpath))]])
    assert.equal(0, rc)
    assert.equal(want, out)
  end)

  it("exports luaopen_shm_core and nothing else", function()
    local so = H.searchpath("shm.core", package.cpath)
    local out, rc = H.sh("nm -D --defined-only " .. H.shellquote(so) .. " | awk '$2 ~ /^[TDBR]$/ {print $3}'")
    assert.equal(0, rc, out)
    local names = {}
    for name in out:gmatch("%S+") do
      if not name:match("^_") then names[#names + 1] = name end
    end
    assert.same({ "luaopen_shm_core" }, names)
  end)
end)

-- Commands standing in for dpkg-query, id, apt-get (and tools a build must not
-- call) in a directory put first on PATH; SHIM_INSTALLED lists the installed
-- packages, SHIM_UID the user, SHIM_APT_FAIL makes apt-get fail, and every
-- call is logged to SHIM_LOG.
local function shims()
  local dir = os.tmpname()
  os.remove(dir)
  finally(function() H.exec("rm -rf " .. H.shellquote(dir)) end)
  assert(H.exec("mkdir " .. H.shellquote(dir)))
  local scripts = {
    ["dpkg-query"] = [[for p in $SHIM_INSTALLED; do [ "$p" = "$3" ] && { printf 'install ok installed'; exit 0; }; done
exit 1]],
    id = [[echo "${SHIM_UID:-1000}"]],
    ["apt-get"] = [[echo "apt-get $*" >> "$SHIM_LOG"
[ -n "$SHIM_APT_FAIL" ] && [ "$1" = install ] && { echo "E: Unable to locate package luajit"; exit 100; }
exit 0]],
  }
  for _, tool in ipairs({ "dpkg", "busted", "luarocks" }) do
    scripts[tool] = 'echo "' .. tool .. ' $*" >> "$SHIM_LOG"; exit 1'
  end
  for name, body in pairs(scripts) do
    local f = assert(io.open(dir .. "/" .. name, "w"))
    f:write("#!/bin/sh\n", body, "\n")
    f:close()
  end
  assert(H.exec("chmod 0755 " .. H.shellquote(dir) .. "/*"))
  local log = dir .. "/log"
  -- run a shell command with the shims first on PATH: its output, exit code and the log
  return function(cmd, env)
    local vars = { "PATH=" .. H.shellquote(dir .. ":" .. os.getenv("PATH")), "SHIM_LOG=" .. H.shellquote(log) }
    for k, v in pairs(env or {}) do vars[#vars + 1] = k .. "=" .. H.shellquote(v) end
    os.remove(log)
    local out, rc = H.sh("env " .. table.concat(vars, " ") .. " sh -c " .. H.shellquote(cmd))
    local f = io.open(log)
    local calls = f and f:read("*a") or ""
    if f then f:close() end
    return out, rc, calls
  end, dir
end

local LUAJIT = "luajit2,libluajit2-5.1-dev|luajit,libluajit-5.1-dev"

describe("the Debian packages step (.ci/deps)", function()
  local function deps(run, groups, env)
    local args = {}
    for i, g in ipairs(groups) do args[i] = H.shellquote(g) end
    return run("sh " .. H.shellquote(H.root .. "/.ci/deps") .. " " .. table.concat(args, " "), env)
  end

  it("takes either LuaJIT, and completes the one that is there", function()
    local run = shims()
    local out, rc, calls = deps(run, { LUAJIT, "gcc" }, { SHIM_INSTALLED = "luajit2 libluajit2-5.1-dev gcc" })
    assert.equal(0, rc, out)
    assert.equal("", out)
    assert.equal("", calls)
    out, rc = deps(run, { LUAJIT, "gcc" }, { SHIM_INSTALLED = "luajit2 gcc" })
    assert.equal(1, rc)
    assert.equal("missing Debian packages; run:\n  sudo apt-get install -y --no-remove libluajit2-5.1-dev\n", out)
    out, rc = deps(run, { LUAJIT, "gcc" }, { SHIM_INSTALLED = "luajit gcc" })
    assert.equal(1, rc)
    assert.matches("--no%-remove libluajit%-5%.1%-dev\n$", out)
  end)

  it("installs as root with --no-remove, and shows apt's output when it fails", function()
    local run = shims()
    local out, rc, calls = deps(run, { LUAJIT, "lua-busted" }, { SHIM_UID = "0", SHIM_INSTALLED = "" })
    assert.equal(0, rc, out)
    -- neither LuaJIT: OpenResty's, which nginx's Lua module needs
    assert.equal("installing: luajit2 libluajit2-5.1-dev lua-busted\n", out)
    assert.equal("apt-get update -qq\napt-get install -y --no-remove luajit2 libluajit2-5.1-dev lua-busted\n", calls)
    out, rc = deps(run, { "luajit2,libluajit2-5.1-dev" },
      { SHIM_UID = "0", SHIM_INSTALLED = "luajit2", SHIM_APT_FAIL = "1" })
    assert.equal(1, rc)
    assert.matches("E: Unable to locate package luajit\n", out)
    assert.matches("deps: apt%-get install %-y %-%-no%-remove libluajit2%-5%.1%-dev failed", out)
  end)

  it("checks nothing where there is no dpkg", function()
    local out, rc = H.sh("env PATH=/nonexistent /bin/sh " .. H.shellquote(H.root .. "/.ci/deps") .. " "
      .. H.shellquote(LUAJIT))
    assert.equal(0, rc, out)
    assert.equal("", out)
  end)

  it("runs before make test compiles anything, with the packages for that interpreter", function()
    local run = shims()
    local out, rc, calls = run(H.make .. " -C " .. H.shellquote(H.root)
      .. " test LUA=luajit BUILD=build/deps-spec-" .. H.pid,
      { SHIM_INSTALLED = "" })
    assert.is_true(rc ~= 0)
    assert.matches("sudo apt%-get install %-y %-%-no%-remove [^\n]*luajit2 libluajit2%-5%.1%-dev", out)
    assert.is_nil(out:find(" cc ", 1, true))
    assert.is_nil(calls:find("busted", 1, true))
    local never = H.root .. "/build/deps-spec-" .. H.pid -- (a suite beside this one has its own)
    assert.is_false(os.rename(never, never) or false)
  end)

  it("is not needed to build: make with LUA_INC calls neither dpkg nor busted nor luarocks #slow", function()
    local run, dir = shims()
    local inc = jit and "/usr/include/luajit-2.1" or "/usr/include/lua" .. H.luaver
    local out, rc, calls = run("cd " .. H.shellquote(H.root) .. " && cp -R --parents Makefile src " .. H.shellquote(dir)
      .. " && " .. H.make .. " -C " .. H.shellquote(dir) .. " LUA=" .. H.lua .. " PKG_CONFIG=false LUA_INC=-I" .. inc,
      { SHIM_INSTALLED = "" })
    assert.equal(0, rc, out)
    assert.equal("", calls)
    assert.is_true(os.rename(dir .. "/build/" .. H.lua .. "/shm/core.so", dir .. "/build/" .. H.lua .. "/shm/core.so"))
  end)
end)
