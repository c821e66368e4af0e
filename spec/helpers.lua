-- Helpers shared by the specs: unique keys and names, child processes,
-- cleanup of every kernel object a spec creates.
local shm = require "shm"

local H = {}

-- The interpreter under test (make test LUA=lua5.1 ...), for the children too.
H.lua = os.getenv("LUA") or (jit and "luajit") or ("lua" .. _VERSION:match("%d+%.%d+"))

-- What differs between Lua 5.1/5.2/5.3/5.4 and LuaJIT, in one place.
H.luaver = _VERSION:match("%d+%.%d+")        -- "5.1" for LuaJIT too
H.lua54 = H.luaver == "5.4"                  -- to-be-closed variables
H.int64 = math.type ~= nil                    -- 64-bit integers (5.3+)
H.maxint = math.maxinteger or (2 ^ 63 - 1024) -- largest integer the module takes
H.minint = math.mininteger or -2 ^ 63
H.unpack = table.unpack or unpack
-- under valgrind (make check-valgrind): the long loops run shorter
H.valgrind = (os.getenv("LD_PRELOAD") or ""):find("vgpreload", 1, true) ~= nil
local loadstring = loadstring or load
--- Compile a chunk of Lua source (5.1's loadstring, later load).
function H.load(code, name) return assert(loadstring(code, name)) end

-- package.searchpath (5.2+), as source for children and as a function here.
H.SEARCHPATH = [[
local searchpath = package.searchpath or function(name, path)
  for c in path:gmatch("[^;]+") do
    local file = c:gsub("%?", (name:gsub("%.", "/")))
    local f = io.open(file)
    if f then f:close() return file end
  end
end
]]
H.searchpath = H.load(H.SEARCHPATH .. "return searchpath")()

--- Run a shell command: true if it exited 0 (os.execute's result differs by version).
function H.exec(cmd)
  local r = os.execute(cmd)
  return r == true or r == 0
end

-- the repository root, so that children find the module wherever busted runs
H.root = debug.getinfo(1, "S").source:match("^@(.*)/spec/helpers%.lua$") or "."
if H.root:sub(1, 1) ~= "/" then H.root = os.getenv("PWD") .. "/" .. H.root end
-- children load the module from the same build as this process (SHM_CPATH:
-- make test's build for the interpreter, or make check-asan's sanitizer build)
H.env = {
  LUA_PATH = H.root .. "/lua/?.lua;" .. H.root .. "/lua/?/init.lua;;",
  LUA_CPATH = (os.getenv("SHM_CPATH") or (H.root .. "/build/" .. H.lua .. "/?.so")) .. ";;",
}
-- LUA_PATH_5_4 and friends take precedence in the children: set them too
local envsuffix = _VERSION:gsub("Lua (%d+)%.(%d+)", "_%1_%2")

local function readpid()
  local f = assert(io.open("/proc/self/stat"))
  local pid = f:read("*n")
  f:close()
  return pid
end
H.pid = readpid()

local counter = 0
local created = {}

--- For child scripts (prepend it): gc(f) makes garbage whose finalizer runs
-- f (a userdata where tables take no finalizer: 5.1, LuaJIT).
H.GC = [[
local function gc(f)
  if newproxy then
    local p = newproxy(true)
    getmetatable(p).__gc = f
    return p
  end
  return setmetatable({}, { __gc = f })
end
]]

-- this process's System V keys: 0x4c000000-0x4fffffff, 4096 for each pid
-- (mod 16384), so that suites running side by side do not meet
local KEYS = 0x4c000000 + (H.pid % 16384) * 4096

--- How `ipcs` begins this process's keys ("0x4c012").
function H.keyprefix() return string.format("0x%08x", KEYS):sub(1, 7) end

--- A System V key no segment uses, remembered for cleanup.
function H.key()
  while true do
    counter = counter + 1
    local k = KEYS + counter % 4096
    local s = shm.open(k)
    if s then s:detach() else
      created[#created + 1] = k
      return k
    end
  end
end

--- A POSIX name no object uses, remembered for cleanup.
function H.name()
  counter = counter + 1
  local n = string.format("/lshm-spec-%d-%d", H.pid, counter)
  created[#created + 1] = n
  return n
end

--- A scratch file path, remembered for cleanup.
function H.tmpfile()
  local p = os.tmpname()
  os.remove(p)
  created[#created + 1] = { path = p }
  return p
end

local function shellquote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
H.shellquote = shellquote

--- The environment for a child running as another user: the checkout may be
-- readable by its owner only (a clone under /root, or in a `mktemp -d`
-- directory), so such a child gets a copy of lua/, bin/ and of this build's
-- shm/core.so in a directory everyone can read; H.cleanup removes it.
-- Returns the environment (LUA_PATH, LUA_CPATH) and the copy's root.
local readable, readable_root
function H.readable_env()
  if readable then return readable, readable_root end
  local dir = os.tmpname()
  os.remove(dir)
  local so = assert(H.searchpath("shm.core", H.env.LUA_CPATH), "no shm.core in " .. H.env.LUA_CPATH)
  local q = shellquote
  assert(H.exec("mkdir -m 0755 " .. q(dir) .. " " .. q(dir .. "/lib") .. " " .. q(dir .. "/lib/shm")
    .. " && cp -R " .. q(H.root .. "/lua") .. " " .. q(H.root .. "/bin") .. " " .. q(dir)
    .. " && cp " .. q(so) .. " " .. q(dir .. "/lib/shm/core.so")
    .. " && chmod -R a+rX " .. q(dir)))
  created[#created + 1] = { dir = dir }
  readable = {
    LUA_PATH = dir .. "/lua/?.lua;" .. dir .. "/lua/?/init.lua;;",
    LUA_CPATH = dir .. "/lib/?.so;;",
  }
  readable_root = dir
  return readable, dir
end

--- Remove whatever the keys, names and paths handed out refer to.
function H.cleanup()
  for i = #created, 1, -1 do
    local c = created[i]
    if type(c) ~= "table" then shm.unlink(c)
    elseif c.dir then H.exec("rm -rf " .. shellquote(c.dir))
    else os.remove(c.path) end
    created[i] = nil
  end
  readable = nil
  collectgarbage()
  collectgarbage()
end

--- Write `code` to a world-readable script file and return its path.
function H.script(code)
  local p = os.tmpname()
  local f = assert(io.open(p, "w"))
  f:write(code)
  f:close()
  os.execute("chmod 0644 " .. shellquote(p))
  return p
end

-- Exit codes: 5.1 and LuaJIT's pipe:close() does not give them, so the shell
-- prints the status on a line of its own after the command's output.
local RC = "; printf '\\n__rc=%d\\n' $?"
local function finish(p)
  local out = p:read("*a")
  p:close()
  local body, rc = out:match("^(.*)\n__rc=(%d+)\n$")
  return body or out, tonumber(rc)
end

--- The shell command that runs `argv` (a script and its arguments) under the
-- interpreter under test with the module of this build: `env LUA_PATH=...
-- LUA_CPATH=... lua5.4 'script' 'arg'...`. `opts.env` replaces the paths,
-- `opts.interpreter` the interpreter; `opts.user` (and `opts.group`) runs it as
-- that user through setpriv, with a copy of the module that user can read.
function H.command(argv, opts)
  opts = opts or {}
  local env = opts.env or (opts.user and (H.readable_env())) or H.env
  local parts = { "env" }
  for k, v in pairs(env) do
    parts[#parts + 1] = k .. "=" .. shellquote(v)
    parts[#parts + 1] = k .. envsuffix .. "=" .. shellquote(v)
  end
  if opts.user then
    parts[#parts + 1] = "setpriv --reuid=" .. opts.user .. " --regid=" .. (opts.group or "nogroup")
      .. " --clear-groups"
  end
  parts[#parts + 1] = opts.interpreter or H.lua
  for _, a in ipairs(argv) do parts[#parts + 1] = shellquote(a) end
  return table.concat(parts, " ")
end

-- The command for H.run and H.spawn: the code as a script, its output (and
-- stderr unless opts.stderr) then the exit code; `pid`: the child prints its
-- pid first (a shell that then execs the interpreter keeps its pid).
local function command(code, args, opts, pid)
  opts = opts or {}
  local script = H.script(code)
  local argv = { script }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  local cmd = H.command(argv, opts)
  if pid then cmd = "sh -c 'echo $$; exec \"$@\"' sh " .. cmd end
  if not opts.stderr then cmd = cmd .. " 2>&1" end
  return cmd .. RC, script
end

--- Run Lua `code` in a child interpreter with `args` (its `...`).
-- Returns its output (stdout and stderr) and its exit code.
function H.run(code, args, opts)
  local cmd, script = command(code, args, opts)
  local p = assert(io.popen(cmd, "r"))
  local out, rc = finish(p)
  os.remove(script)
  return out, rc
end

--- Start a child without waiting: returns a handle with `.pid` (the child
-- interpreter's process id, known before its code runs), :line() to read
-- one line of its output and :finish() returning the rest and the exit code.
function H.spawn(code, args, opts)
  local cmd, script = command(code, args, opts, true)
  local p = assert(io.popen(cmd, "r"))
  local h = { pid = tonumber(p:read("*l")) }
  function h:line() return p:read("*l") end
  -- (a child that has not ended after `limit` seconds, 300 unless given, is
  -- killed and raises here: a hang fails its spec instead of the suite)
  function h:finish(limit)
    local pid = self.pid
    local ended = H.until_true(function()
      local st = H.state(pid)
      return st == nil or st == "Z"
    end, limit or 300)
    if not ended then H.kill(pid, "KILL") end
    local out, rc = finish(p)
    os.remove(script)
    if not ended then
      error(string.format("child %d still running after %d s (killed); its output:\n%s", pid, limit or 300, out), 2)
    end
    return out, rc
  end
  return h
end

--- A FIFO to release a waiting child: child blocks in io.open(path):read().
function H.fifo()
  local p = os.tmpname()
  os.remove(p)
  assert(H.exec("mkfifo -m 0666 " .. shellquote(p)))
  created[#created + 1] = { path = p }
  return p
end

--- Write a line into a FIFO (blocks until the child opens it for reading).
function H.release(fifo, msg)
  local f = assert(io.open(fifo, "w"))
  f:write((msg or "go") .. "\n")
  f:close()
end

--- Shell command output.
function H.sh(cmd)
  local p = assert(io.popen("{ " .. cmd .. "; } 2>&1" .. RC))
  return finish(p)
end

--- `make` for the specs' own makes: silent, and without the flags of a make
-- that runs the suite (make test -C DIR would have them print directories).
H.make = "env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s --no-print-directory"

--- Does a System V segment with this key exist (per ipcs)?
function H.ipcs_has(key)
  local out = H.sh("ipcs -m")
  return out:find(string.format("0x%08x", key), 1, true) ~= nil
end

--- Monotonic seconds (lua-system comes with busted).
function H.now()
  return require("system").monotime()
end

-- The fields of /proc/PID/stat after the command name (field 3 first).
local function procstat(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return nil end
  local stat = f:read("*a")
  f:close()
  -- (a process that exits between the open and the read leaves nothing to read)
  local rest = stat and stat:match("%) (.*)$")
  if not rest then return nil end
  local fields = {}
  for w in rest:gmatch("%S+") do fields[#fields + 1] = w end
  return fields
end

--- CPU time (user + system, in clock ticks) a process has used so far.
function H.cputicks(pid)
  local f = procstat(pid)
  return f and tonumber(f[12]) + tonumber(f[13]) -- utime, stime
end

--- Process state letter (R running, S sleeping, T stopped, ...).
function H.state(pid)
  local f = procstat(pid)
  return f and f[1]
end

--- Wait (on a real wait: a futex with a timeout, nothing to notify it)
-- until pred() is true; gives up after `limit` seconds.
function H.until_true(pred, limit)
  local seg = shm.create(shm.PRIVATE, 8)
  seg:remove() -- (now: gone at detach or exit, even if pred raises)
  local deadline = H.now() + (limit or 10)
  local ok = pred()
  while not ok and H.now() < deadline do
    seg:wait(0, 0, 0.002)
    ok = pred()
  end
  seg:detach()
  return ok
end

--- A new shm.dict on a key of its own (H.cleanup removes it): the dict and the key.
--- A private dict (removed at once: gone when detached).
function H.private_dict(capacity)
  local d = assert(shm.dict.create(shm.PRIVATE, capacity or 1024 * 1024))
  assert(d:segment():remove())
  return d
end

--- A real wait of `s` seconds (a futex with a timeout, nothing to notify it),
-- not os.execute("sleep").
function H.pause(s)
  local seg = shm.create(shm.PRIVATE, 8)
  seg:remove()
  seg:wait(0, 0, s)
  seg:detach()
end

function H.dict(capacity)
  local key = H.key()
  return assert(shm.dict.create(key, capacity or 1024 * 1024)), key
end

--- Lua source that opens the dict of arg[1] in a child as `d`, with `say(...)`
-- (print and flush).
H.OPEN_DICT = [[
local shm = require "shm"
local d = assert(shm.dict.open(tonumber(arg[1])))
local function say(...) print(...) io.stdout:flush() end
]]

--- A kill storm: `n` children running `code` (with `args`; each prints "ready"
-- first), one of them killed with kill -9 every 1 to 20 ms and replaced, `kills`
-- times, then all killed; `check(out)` sees every child's output.
function H.kill_storm(code, args, n, kills, check)
  local seg = shm.create(shm.PRIVATE, 8)
  seg:remove() -- (gone at detach or exit)
  local function start()
    local c = H.spawn(code, args)
    assert(c:line() == "ready", "a storm's child did not start")
    return c
  end
  local function stop(c)
    H.kill(c.pid)
    check((c:finish()))
  end
  local ok, err = pcall(function()
    local children = {}
    for i = 1, n do children[i] = start() end
    math.randomseed(H.pid)
    for _ = 1, kills do
      seg:wait(0, 0, math.random(1, 20) / 1000) -- (a timed sleep: the storm's rhythm)
      local i = math.random(n)
      stop(children[i])
      children[i] = start()
    end
    for i = 1, n do stop(children[i]) end
  end)
  seg:detach()
  if not ok then error(err, 0) end
end


--- The ```lua blocks of README.md's section `title` (## title), in order;
-- the POSIX names the examples fix (README_NAMES) made this process's own, so
-- that two suites running side by side never meet.
local README_NAMES = { "jobs%-example", "lua%-shm%-from%-python" }
function H.readme_blocks(title)
  local f = assert(io.open(H.root .. "/README.md"))
  local text = f:read("*a")
  f:close()
  local start = text:find("\n## " .. title .. "\n", 1, true)
  assert(start, "README has no section " .. title)
  local section = text:sub(start + 1):match("^(.-)\n## ") or text:sub(start + 1)
  local blocks = {}
  for code in section:gmatch("\n```lua\n(.-)\n```") do
    for _, name in ipairs(README_NAMES) do code = code:gsub(name, "%0-" .. H.pid) end
    blocks[#blocks + 1] = code
  end
  return blocks
end

--- What a README example says it prints: the comments closing its print( and
-- io.write( lines, one line each, runs of blanks as one space.
function H.says(code)
  local lines = {}
  for line in (code .. "\n"):gmatch("([^\n]*)\n") do
    local said = line:match("^%s*print%(.*%)%s+%-%-%s+(.-)%s*$")
      or line:match("^%s*io%.write%(.*%)%s+%-%-%s+(.-)%s*$")
    if said then lines[#lines + 1] = said end
  end
  return table.concat(lines, "\n")
end

--- Output compared with H.says: runs of blanks (print's tabs) as one space.
function H.blanks(out) return (out:gsub("[ \t]+", " "):gsub("\n$", "")) end

--- Run Lua `code` (with `args`) in a child inside `unshare FLAGS` (private
-- namespaces: the machine's own settings and /dev/shm are never touched),
-- after the shell command `setup` there.  Returns its output and exit code.
function H.in_namespace(flags, setup, code, args)
  local script = H.script(code)
  local env = {}
  for k, v in pairs(H.env) do env[#env + 1] = k .. "=" .. shellquote(v) end
  local inner = setup .. " && env " .. table.concat(env, " ") .. " " .. H.lua .. " " .. script
  for _, a in ipairs(args or {}) do inner = inner .. " " .. shellquote(a) end
  local out, rc = H.sh("unshare " .. flags .. " sh -c " .. shellquote(inner))
  os.remove(script)
  return out, rc
end

function H.kill(pid, sig)
  return H.exec("kill -" .. (sig or "KILL") .. " " .. pid .. " 2>/dev/null")
end

--- A prefix for our own nginx (nginx -p DIR, its pid file DIR/nginx.pid): a new
-- directory everyone can read, `dir`; `master()`, the pid nginx wrote (nil once
-- it has exited); `errorlog()`, DIR/error.log; `workers`, pids to kill if the
-- master does not stop; `stop()`: QUIT the master (KILL after 10 s), remove DIR.
function H.nginx_prefix()
  local dir = os.tmpname()
  os.remove(dir)
  assert(H.exec("mkdir -m 0755 " .. shellquote(dir)))
  local n = { dir = dir, workers = {} }
  local function slurp(path)
    local f = io.open(path)
    local s = f and f:read("*a")
    if f then f:close() end
    return s
  end
  function n.master() return tonumber(slurp(dir .. "/nginx.pid") or "") end
  function n.errorlog() return slurp(dir .. "/error.log") or "" end
  function n.stop()
    local pid = n.master()
    if pid then
      H.kill(pid, "QUIT")
      if not H.until_true(function() return H.state(pid) == nil end, 10) then
        for _, w in ipairs(n.workers) do H.kill(w, "KILL") end
        H.kill(pid, "KILL")
      end
    end
    H.exec("rm -rf " .. shellquote(dir))
  end
  return n
end

--- The path of a command on PATH, or nil.
function H.which(cmd)
  local out = H.sh("command -v " .. cmd .. " 2>/dev/null || true")
  return out:match("^(%S+)")
end

--- nginx with OpenResty's Lua module, for the specs that run one: a table
-- (bin, ndk, lua_mod, resty_path, ld: the command prefix that runs nginx, and
-- curl), or nil and what is missing. SHM_NGINX_ROOT: a root to look in first
-- (a `dpkg -x` of libnginx-mod-http-lua, lua-resty-core, lua-resty-lrucache
-- and libluajit2-5.1-2, where Debian's luajit is installed and they cannot be).
function H.nginx()
  local roots = { os.getenv("SHM_NGINX_ROOT"), "" }
  local function find(rel)
    for _, root in pairs(roots) do
      local f = io.open(root .. rel)
      if f then f:close() return root .. rel, root end
    end
  end
  local bin = H.which("nginx") or (io.open("/usr/sbin/nginx") and "/usr/sbin/nginx")
  local ndk = find("/usr/lib/nginx/modules/ndk_http_module.so")
  local lua_mod, lua_root = find("/usr/lib/nginx/modules/ngx_http_lua_module.so")
  local resty = find("/usr/share/lua/5.1/resty/core.lua")
  local why = not bin and "nginx is not installed"
    or not ndk and "ndk_http_module.so (libnginx-mod-http-ndk) is missing"
    or not lua_mod and "ngx_http_lua_module.so (libnginx-mod-http-lua) is missing"
    or not resty and "resty.core (lua-resty-core) is missing"
    or not H.which("curl") and "curl is missing"
  if why then return nil, why end
  -- nginx's environment: OpenResty's libluajit beside the module (a dpkg -x
  -- root); never the sanitizer runtime make check-asan preloads (nginx and
  -- its LuaJIT are not built for it; curl hangs under it)
  local arch = "/usr/lib/x86_64-linux-gnu"
  return {
    bin = bin, ndk = ndk, lua_mod = lua_mod, resty_path = resty:gsub("resty/core%.lua$", "?.lua"),
    ld = "env -u LD_PRELOAD " .. (lua_root ~= "" and ("LD_LIBRARY_PATH=" .. shellquote(lua_root .. arch) .. " ") or ""),
    curl = "env -u LD_PRELOAD curl -s ",
  }
end

--- Start nginx (`ngx` from H.nginx()) in `prefix` (from H.nginx_prefix())
-- with the configuration `conf`, whose upper-case words DIR, NDK, LUAMOD,
-- PORT, PRIVATE (in http {}: no access log, temporary files in the prefix)
-- and those of `vars` are replaced; loopback ports are tried until nginx gets
-- a free one. Returns the port, or raises what nginx said.
function H.nginx_start(ngx, prefix, conf, vars)
  local dir, out = prefix.dir, nil
  for _ = 1, 10 do
    local port = math.random(20000, 60000)
    local v = { DIR = dir, NDK = ngx.ndk, LUAMOD = ngx.lua_mod, PORT = tostring(port), PRIVATE = "access_log off;" }
    for _, t in ipairs({ "client_body", "proxy", "fastcgi", "uwsgi", "scgi" }) do
      v.PRIVATE = v.PRIVATE .. " " .. t .. "_temp_path " .. dir .. "/" .. t .. ";"
    end
    for k, x in pairs(vars or {}) do v[k] = x end
    local f = assert(io.open(dir .. "/nginx.conf", "w"))
    f:write((conf:gsub("[A-Z]+", v)))
    f:close()
    local rc
    out, rc = H.sh(ngx.ld .. shellquote(ngx.bin) .. " -p " .. shellquote(dir) .. " -c "
      .. shellquote(dir .. "/nginx.conf") .. " -e " .. shellquote(dir .. "/error.log"))
    if rc == 0 then return port end
    if not (out .. prefix.errorlog()):find("Address already in use", 1, true) then break end
  end
  error("nginx did not start: " .. tostring(out) .. prefix.errorlog(), 2)
end

return H
