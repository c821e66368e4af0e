-- shm.dict against a model of its documented semantics (spec/dictseq.lua):
-- seeded random sequences of every method, every call's results compared,
-- on every interpreter (and under ASan, with and without LuaJIT's FFI).
-- SHM_SEED: the first seed (default 1); SHM_MODEL_SEQS: how many sequences.
-- On a failure: the seed and the last calls.
--
-- Then the reproductions of the bugs this proof found (issue 17), each at the
-- size users run.
local shm = require "shm"
local H = require "helpers"
local S = require "dictseq"

local SEED = tonumber(os.getenv("SHM_SEED")) or 1
local SEQS = tonumber(os.getenv("SHM_MODEL_SEQS")) or (H.valgrind and 20 or 1000)
local MILLION = H.valgrind and 100000 or 1000000 -- (the 10^6 spec: 10^5 under valgrind)
local CAP = 64 * 1024 * 1024

local timer = shm.create(shm.PRIVATE, 8)
timer:remove()
local function sleep(s) timer:wait(0, 0, s) end

local function newdict(cap)
  local d = assert(shm.dict.create(shm.PRIVATE, cap or CAP))
  assert(d:segment():remove())
  return d
end

-- play sequences seed..seed+count-1 with opts; the calls compared
local function prove(seed, count, opts)
  local calls = 0
  for s = seed, seed + count - 1 do
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    if o.short == nil then o.short = s % 4 == 0 end
    local ops, expect = S.generate(s, o)
    local d = newdict()
    local got = S.run(d, ops, sleep)
    d:stat() -- the whole structure, checked
    d:detach()
    local bad = S.compare(ops, expect, got)
    if bad then
      error(string.format("seed %d (SHM_SEED=%d), call %d of %d differs from the model:\n%s", s, SEED + s - seed,
        bad, #ops,
        S.trace(ops, expect, got, bad, { "model", "shm" })), 0)
    end
    calls = calls + #ops
  end
  return calls
end

describe("shm.dict against its model", function()
  after_each(H.cleanup)

  it("gives the model's results, call for call, over random sequences", function()
    local calls = prove(SEED, SEQS, {})
    print(string.format("\n    model: seed %d, %d sequences, %d calls compared (%s%s)", SEED, SEQS, calls,
      H.lua, os.getenv("SHM_NO_FFI") == "1" and ", no FFI" or ""))
  end)

  it("and with values beyond ngx (tables) and no long lists", function()
    local calls = prove(SEED + 500000, math.max(20, math.floor(SEQS / 4)), { lists = false, n = 400 })
    assert.is_true(calls > 0)
  end)

  it("gives the model's results on hand-picked edges", function()
    local d = newdict()
    local got = S.run(d, S.EDGES, sleep)
    d:detach()
    local diffs, nknown = S.edges(S.run(S.model(CAP), S.EDGES, sleep), got, { "model", "shm" })
    if #diffs > 0 then print("\n    edges that differ from the model:\n" .. table.concat(diffs, "\n")) end
    assert(#diffs == nknown, "new differences from the model (above)")
  end)
end)

describe("shm.dict at the sizes users run", function()
  after_each(H.cleanup)

  it("deletes a 100-element list", function()
    local d = newdict(1024 * 1024)
    for i = 1, 100 do d:rpush("l", "e" .. i) end
    assert.same({ true, nil, false }, { d:delete("l") })
    assert.equal(0, d:llen("l"))
    d:stat()
  end)

  it("keeps the sign of -0.0 as ngx does", function()
    local d = newdict(1024 * 1024)
    d:set("z", -0.0)
    d:rpush("l", -0.0)
    assert.equal(-math.huge, 1 / d:get("z"))
    assert.equal(-math.huge, 1 / d:lpop("l"))
  end)

  it("keeps flags 0xffffffff as ngx does", function()
    local d = newdict(1024 * 1024)
    d:set("k", 1, 0, 0xffffffff)
    local _, flags = d:get("k")
    assert.equal(-2147483648, flags) -- ngx's (spec/dict_oracle_spec.lua)
  end)

  it("pushes, counts and deletes a list of 10^5 elements", function()
    local d = newdict(32 * 1024 * 1024)
    for i = 1, 100000 do assert(d:rpush("l", i)) end
    assert.equal(100000, d:llen("l"))
    assert.equal(1, d:lpop("l"))
    assert.equal(100000, d:rpop("l"))
    assert.same({ true, nil, false }, { d:delete("l") })
    assert.equal(0, d:llen("l"))
    assert.equal(0, d:stat().count)
  end)

  it("holds 10^6 keys in a big dict", function()
    local d = newdict(256 * 1024 * 1024)
    local free = d:free_space()
    for i = 1, MILLION do assert(d:safe_set("key" .. i, i)) end
    assert.equal(MILLION, d:stat().count)
    for i = 1, MILLION, 9973 do assert.equal(i, d:get("key" .. i)) end
    assert.equal(1024, #d:get_keys())
    d:flush_all()
    assert.is_true(d:flush_expired(0) >= MILLION - 3)
    assert.equal(free, d:free_space())
  end)

  it("flush_all and flush_expired over 10^5 keys", function()
    local d = newdict(32 * 1024 * 1024)
    local free = d:free_space()
    for i = 1, 100000 do assert(d:set("k" .. i, "v" .. i)) end
    d:flush_all()
    assert.equal(0, #d:get_keys(0))
    assert.is_true(d:flush_expired(0) >= 100000 - 3) -- (flush_all frees up to 3 itself)
    assert.equal(free, d:free_space())
  end)

  it("overwrites, expires and flushes a 1000-element list", function()
    local d = newdict(4 * 1024 * 1024)
    local free = d:free_space()
    for i = 1, 1000 do d:rpush("l", i) end
    assert.is_true((d:set("l", "x")))
    for i = 1, 1000 do d:lpush("l2", i) end
    assert.is_true((d:expire("l2", 0.001)))
    sleep(0.01)
    assert.is_true((d:set("k", 1)))
    for i = 1, 1000 do d:lpush("l3", i) end
    d:flush_all()
    d:flush_expired(0)
    d:stat()
    assert.equal(free, d:free_space())
  end)

  it("pushes onto an expired key when memory is short", function()
    local d = newdict(1024 * 1024)
    d:set("pad", 1)
    d:set("s", "x", 0.001)
    sleep(0.01)
    d:lpush("s", string.rep("v", 2 ^ 20))
    d:stat()
    assert.equal(1, d:get("pad"))
  end)

  it("replaces a value of a third of the capacity by one of the same size", function()
    local d = newdict(1024 * 1024)
    local v = string.rep("x", 300000)
    assert.is_true((d:set("k", v)))
    assert.is_true((d:set("k", v)))
    assert.is_true((d:set("k", string.rep("y", 400000))))
  end)
end)
