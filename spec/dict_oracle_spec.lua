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
-- (default 150; `make prove` runs 3000). SHM_NGINX_ROOT: see H.nginx (spec/helpers.lua).
local shm = require "shm"
local H = require "helpers"
local S = require "dictseq"

local q = H.shellquote
local NGX, why = H.nginx()

if not NGX then
  describe("shm.dict against ngx.shared.DICT", function() pending(why) end)
  return
end

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
  PRIVATE
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
  local prefix, port

  setup(function()
    prefix = H.nginx_prefix()
    assert(H.exec("cp " .. q(H.root .. "/spec/dictseq.lua") .. " " .. q(prefix.dir) .. " && chmod a+r "
      .. q(prefix.dir .. "/dictseq.lua")))
    port = H.nginx_start(NGX, prefix, CONF, {
      LUAPATH = prefix.dir .. "/?.lua;" .. NGX.resty_path .. ";;",
      BIG = tostring(math.floor(CAP / 1024)), SMALL = tostring(math.floor(SMALL / 1024)),
    })
  end)

  teardown(function()
    if prefix then prefix.stop() end
    H.cleanup()
  end)

  -- ngx's results for a batch of sequences
  local function oracle(seqs, zone)
    local body = H.tmpfile()
    local f = assert(io.open(body, "wb"))
    f:write(S.serialize(seqs))
    f:close()
    local out, rc = H.sh(NGX.curl .. "--max-time 300 --data-binary @" .. q(body) .. " "
      .. q("http://127.0.0.1:" .. port .. "/run?dict=" .. zone))
    os.remove(body)
    assert(rc == 0 and not out:find("<html>", 1, true), "nginx: " .. out:sub(1, 400) .. prefix.errorlog():sub(-2000))
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

  local SEED = tonumber(os.getenv("SHM_SEED")) or 1
  local SEQS = tonumber(os.getenv("SHM_ORACLE_SEQS")) or (H.valgrind and 10 or 150)

  -- play `count` sequences from `seed` on both sides (and the model), compare
  local function prove(seed, count, opts, zone, cap)
    local calls, batch = 0, 20
    for b = 0, count - 1, batch do
      local seqs, expects = {}, {}
      for i = 1, math.min(batch, count - b) do
        local o = {}
        for k, v in pairs(opts) do o[k] = v end
        o.short = o.short or (seed + b + i - 1) % 4 == 0
        seqs[i], expects[i] = S.generate(seed + b + i - 1, o)
      end
      local ngx = oracle(seqs, zone)
      for i, ops in ipairs(seqs) do
        local s = seed + b + i - 1
        local d = assert(shm.dict.create(shm.PRIVATE, cap))
        d:segment():remove()
        local got = S.run(d, ops, sleep)
        d:detach()
        local bad = S.compare(ops, ngx[i], got)
        if bad then
          error(string.format("seed %d (SHM_SEED=%d), call %d of %d differs from ngx.shared.DICT:\n%s", s,
            SEED + s - seed, bad, #ops, S.trace(ops, ngx[i], got, bad, { "ngx", "shm" })), 0)
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

  it("evicts as ngx.shared.DICT does, loosely (small dicts)", function()
    local n = math.max(5, math.floor(SEQS / 30))
    local calls = prove(SEED + 1000000, n, { ngx = true, evict = true, n = 300 }, "small", SMALL)
    print(string.format("\n    oracle (eviction): seed %d, %d sequences, %d calls", SEED + 1000000, n, calls))
  end)
end)
