/*
 * shm.queue: a bounded queue of variable-size messages in one segment, for
 * any number of writer and reader processes.
 *
 * Layout: a header (Q_HDRSIZE bytes) then a byte ring of `capacity` bytes.
 * A message is a 4-byte length and its bytes, written at `tail` (modulo the
 * capacity, wrapping); `head` and `tail` are monotonic 64-bit byte counters.
 *
 * Writers serialise on a robust, process-shared mutex and move `tail`.
 * Readers take no lock: a reader copies the record at `head` out and then
 * claims it with one compare-and-swap of `head`; if another reader claimed it
 * first, the copy is dropped and it tries again.  The bytes in [head, tail)
 * cannot change while `head` stays put (writers only write beyond `tail` and
 * below head + capacity), so a copy whose claim succeeds is whole.  Writers and
 * readers never wait for each other.  Writers keep a cached copy of `head`,
 * readers one of `tail`, and reload it only when the ring looks full (empty),
 * so a busy writer/reader pair shares little but the messages themselves.
 *
 * Crash safety: a record is complete before `tail` moves.  A writer writes a
 * small journal (pend) just before it commits; whoever next takes a lock whose
 * owner died rolls that commit forward.  So a writer killed mid-push leaves
 * either no trace or a whole message, never a torn one, and readers are never
 * stuck; a reader killed mid-pop holds nothing.
 *
 * Wake-ups: a side that finds the ring empty (full) spins briefly on the
 * other side's index, then registers itself in `rsleep` (`wsleep`) and sleeps
 * on the `nonempty` (`nonfull`) word.  Only the sleeper changes its own
 * registration; a committer touches the word and makes the wake system call
 * only when somebody is registered, so a busy queue makes no system calls.
 *
 * The header lives in memory other processes can write: every field is read
 * once into a local, validated, and only then used.  No Lua API call that can
 * raise is made while a mutex is held.
 */
/***
@module shm
*/
#include "shm.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define QUEUE_MT "shm.queue"
#define Q_MAGIC 0x4c53484d51554533ULL /* "LSHMQUE3" */
#define Q_VERSION 3u
#define Q_HDRSIZE 1024u
#define Q_MINCAP 16u
#define Q_LENSZ 4u
#define Q_SPINS 4000  /* looks before sleeping */
#define CL 64

typedef struct qside { /* the writers' private line(s) */
  shm_lock lock;
  uint64_t other;     /* cached copy of head */
  uint64_t count;     /* messages pushed, ever */
  uint64_t pend;      /* journal: the tail being committed, 0 = none */
  uint64_t pend_count;
  uint64_t recovered; /* locks taken over from a dead owner */
} qside;

typedef struct qhdr {
  _Alignas(CL) uint64_t magic;
  uint32_t version;
  uint32_t hdrsize;
  uint64_t capacity;
  uint32_t closed;
  uint32_t reserved;
  _Alignas(CL) qside prod;
  _Alignas(CL) uint64_t tail; /* bytes committed, ever */
  _Alignas(CL) uint64_t head; /* bytes consumed, ever */
  _Alignas(CL) uint32_t nonempty; /* futex words */
  uint32_t rsleep;                /* sleepers registered on them */
  _Alignas(CL) uint32_t nonfull;
  uint32_t wsleep;
} qhdr;

_Static_assert(sizeof(qhdr) <= Q_HDRSIZE, "queue header too large");

typedef struct shm_queue {
  shm_segment *seg; /* kept alive by the user value */
  uint64_t cap;     /* validated once at open: later writes to the header's
                       copy by other processes are never trusted */
  uint64_t tail;    /* this reader's cached copy of tail */
  shm_ctx *ctx;
  char *buf;        /* pop's staging buffer: filled under the lock, pushed after */
  size_t bufsize;
} shm_queue;

/* ---- the ring ---- */

static void ring_put(unsigned char *data, uint64_t cap, size_t at, const void *src, size_t n) {
  size_t first = n < cap - at ? n : (size_t)(cap - at);
  memcpy(data + at, src, first);
  if (n > first) memcpy(data, (const char *)src + first, n - first);
}

static void ring_get(const unsigned char *data, uint64_t cap, size_t at, void *dst, size_t n) {
  size_t first = n < cap - at ? n : (size_t)(cap - at);
  memcpy(dst, data + at, first);
  if (n > first) memcpy((char *)dst + first, data, n - first);
}

static size_t advance(size_t at, size_t n, uint64_t cap) {
  at += n;
  return at >= cap ? at - (size_t)cap : at;
}

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

static qhdr *hdrof(shm_segment *s) { return (qhdr *)(void *)s->addr; }
static unsigned char *dataof(shm_segment *s) { return s->addr + Q_HDRSIZE; }

/* The length of the record at pos, checked to end by tail; its ring offset
 * goes to *at.  NULL, or why the record cannot be there. */
static const char *readlen(shm_segment *s, uint64_t cap, uint64_t pos, uint64_t tail,
                           uint32_t *len, size_t *at) {
  if (tail - pos < Q_LENSZ) return "truncated record";
  *at = (size_t)(pos % cap);
  ring_get(dataof(s), cap, *at, len, Q_LENSZ);
  if ((uint64_t)*len > tail - pos - Q_LENSZ) return "record length out of range";
  return NULL;
}

#define LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define LOADSC(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)

/* The configuration line: NULL, or why this is not a valid queue. */
static const char *readconfig(shm_segment *s, uint64_t *cap) {
  qhdr *h = hdrof(s);
  if (s->size < Q_HDRSIZE + Q_MINCAP) return "segment too small for a queue";
  if (LOAD(&h->magic) != Q_MAGIC) return "not a queue (bad magic)";
  if (LOAD(&h->version) != Q_VERSION) return "unsupported queue version";
  if (LOAD(&h->hdrsize) != Q_HDRSIZE) return "bad header size";
  *cap = LOAD(&h->capacity);
  if (*cap < Q_MINCAP || *cap > s->size - Q_HDRSIZE || *cap > UINT32_MAX)
    return "capacity does not match the segment";
  if (LOAD(&h->closed) > 1) return "bad closed flag";
  return NULL;
}

/* ---- locking ---- */

enum { Q_OK = 0, Q_TIMEOUT = 1, Q_CORRUPT = 2, Q_ERRNO = 3 };

typedef struct qop { /* an operation under the writers' lock */
  qhdr *h;
  qside *side;     /* &h->prod */
  uint64_t cap;
  const char *why; /* Q_CORRUPT */
  int en;          /* Q_ERRNO */
} qop;

/* Roll forward a commit whose writer died after its journal entry. */
static const char *recover(qop *op) {
  uint64_t pend = op->side->pend, cur = op->h->tail;
  if (pend == 0) return NULL;
  if (pend - cur > op->cap || op->side->pend_count - op->side->count > 1)
    return "bad journal entry";
  __atomic_store_n(&op->h->tail, pend, __ATOMIC_SEQ_CST);
  op->side->count = op->side->pend_count;
  op->side->pend = 0;
  return NULL;
}

/* Take the writers' lock (repairing after a dead owner). */
static int qop_begin(qop *op, shm_queue *q, const shm_deadline *d) {
  int r;
  op->h = hdrof(q->seg);
  op->side = &op->h->prod;
  op->cap = q->cap;
  r = shm_lock_acquire(&op->side->lock, shm_ctx_self(q->ctx), d);
  if (r == SHM_TIMEOUT) return Q_TIMEOUT;
  if (r == SHM_OWNERDIED) {
    op->side->recovered++;
    op->why = recover(op);
    if (op->why != NULL) {
      shm_lock_release(&op->side->lock);
      return Q_CORRUPT;
    }
  }
  return Q_OK;
}

static void qop_end(qop *op) { shm_lock_release(&op->side->lock); }

/* ---- the object ---- */

/* The queue at idx, attached.  The methods carry the metatable as their
 * upvalue: comparing with it is cheaper than luaL_checkudata's lookup. */
static shm_queue *checkqueue(lua_State *L, int idx, shm_segment **ps) {
  shm_queue *q = (shm_queue *)lua_touserdata(L, idx);
  if (q == NULL || !lua_getmetatable(L, idx) || !lua_rawequal(L, -1, lua_upvalueindex(1)))
    luaL_typeerror(L, idx, QUEUE_MT);
  lua_pop(L, 1);
  *ps = q->seg;
  if (q->seg->addr == NULL) luaL_error(L, "attempt to use a detached queue");
  return q;
}

static int corrupt(lua_State *L, const char *why) {
  return luaL_error(L, "shm.queue: corrupted queue (%s)", why);
}

/* Results for a failure: timeout/closed/interrupted, corrupted, errno. */
static int failure(lua_State *L, int r, const qop *op, int nilfirst, const char *what) {
  if (r == Q_CORRUPT) return corrupt(L, op->why);
  if (r == Q_ERRNO) return shm_fail(L, op->en, "shm.queue: pthread_mutex_lock");
  if (nilfirst) lua_pushnil(L);
  else lua_pushboolean(L, 0);
  lua_pushstring(L, what);
  return 2;
}

static int expired(const shm_deadline *d) {
  struct timespec now;
  if (d->forever) return 0;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return now.tv_sec > d->at.tv_sec || (now.tv_sec == d->at.tv_sec && now.tv_nsec >= d->at.tv_nsec);
}

/* Wait until the other side's index moves on from `seen` (or the queue is
 * closed): spin, then sleep registered in *sleepers on *word.
 * Returns 0, ETIMEDOUT or EINTR. */
static int await(qhdr *h, uint64_t *index, uint64_t seen, uint32_t *word, uint32_t *sleepers,
                 const shm_deadline *d) {
  int i, en = 0;
  uint32_t w;
  if (expired(d)) return ETIMEDOUT;
  for (i = 0; i < Q_SPINS; i++) {
    if (LOAD(index) != seen || LOAD(&h->closed)) return 0;
    cpu_relax();
  }
  __atomic_add_fetch(sleepers, 1, __ATOMIC_SEQ_CST);
  w = LOADSC(word);
  if (LOADSC(index) == seen && !LOADSC(&h->closed)) en = shm_futex_wait(word, w, d);
  __atomic_sub_fetch(sleepers, 1, __ATOMIC_SEQ_CST);
  if (en == ETIMEDOUT && !expired(d)) en = 0;
  return en == ETIMEDOUT || en == EINTR ? en : 0;
}

/* After a commit: wake sleepers on the other side, if there are any.  The
 * commit's SEQ_CST store of the index comes before this SEQ_CST load. */
static void wake(uint32_t *word, uint32_t *sleepers, int n) {
  if (LOADSC(sleepers) != 0) {
    __atomic_add_fetch(word, 1, __ATOMIC_SEQ_CST);
    shm_futex_wake(word, n);
  }
}

/* Commit a move of tail to `to`, journalled. */
static void commit(qop *op, uint64_t to) {
  qside *sd = op->side;
  sd->pend_count = sd->count + 1;
  __atomic_store_n(&sd->pend, to, __ATOMIC_RELEASE);
  __atomic_store_n(&op->h->tail, to, __ATOMIC_SEQ_CST);
  sd->count++;
  __atomic_store_n(&sd->pend, 0, __ATOMIC_RELEASE);
}

/***
A bounded queue of variable-size messages in a segment, for any number of writer
and reader processes (see `shm.queue.create`).
@type queue
*/

/***
Add a message; blocks while the queue is full.
@function queue:push
@tparam string msg
@tparam[opt] number timeout seconds; `0` tries once, `nil` waits forever
@treturn boolean `true`
@treturn[2] boolean `false`
@treturn[2] string `"timeout"`, `"closed"` or `"interrupted"`
@raise if `msg` can never fit, or the header is corrupted
@usage assert(q:push("job 42", 1))
*/
static int q_push(lua_State *L) {
  shm_segment *s;
  size_t len;
  const char *msg;
  shm_deadline d;
  shm_queue *q = checkqueue(L, 1, &s);
  msg = luaL_checklstring(L, 2, &len);
  shm_optdeadline(L, 3, &d);
  if (s->readonly) return luaL_error(L, "attempt to push to a read-only queue");
  for (;;) {
    qop op;
    uint64_t tail, head;
    int r = qop_begin(&op, q, &d), en;
    if (r == Q_TIMEOUT) return failure(L, r, &op, 0, "timeout");
    if (r != Q_OK) return failure(L, r, &op, 0, NULL);
    if (len > op.cap - Q_LENSZ) {
      qop_end(&op);
      return luaL_error(L, "message of %I bytes can never fit in a queue of capacity %I",
                        (lua_Integer)len, (lua_Integer)op.cap);
    }
    if (LOAD(&op.h->closed)) {
      qop_end(&op);
      return failure(L, Q_TIMEOUT, &op, 0, "closed");
    }
    tail = op.h->tail;
    head = op.side->other;
    if (tail - head > op.cap || op.cap - (tail - head) < Q_LENSZ + len) {
      head = LOAD(&op.h->head); /* looks full: look at the readers' real head */
      if (tail - head > op.cap) {
        qop_end(&op);
        return corrupt(L, "head and tail out of range");
      }
      op.side->other = head;
    }
    if (op.cap - (tail - head) >= Q_LENSZ + len) {
      uint32_t l32 = (uint32_t)len;
      size_t at = (size_t)(tail % op.cap);
      ring_put(dataof(s), op.cap, at, &l32, Q_LENSZ);
      ring_put(dataof(s), op.cap, advance(at, Q_LENSZ, op.cap), msg, len);
      commit(&op, tail + Q_LENSZ + len);
      qop_end(&op);
      wake(&op.h->nonempty, &op.h->rsleep, 1);
      lua_pushboolean(L, 1);
      return 1;
    }
    qop_end(&op);
    en = await(op.h, &op.h->head, head, &op.h->nonfull, &op.h->wsleep, &d);
    if (en == ETIMEDOUT) return failure(L, Q_TIMEOUT, &op, 0, "timeout");
    if (en == EINTR) return failure(L, Q_TIMEOUT, &op, 0, "interrupted");
  }
}

/***
Take the oldest message; blocks while the queue is empty.
@function queue:pop
@tparam[opt] number timeout seconds; `0` tries once, `nil` waits forever
@treturn string the message
@treturn[2] nil
@treturn[2] string `"timeout"`, `"closed"` (closed and drained) or `"interrupted"`
@usage for msg in function() return q:pop() end do print(msg) end
*/
static int q_pop(lua_State *L) {
  shm_segment *s;
  shm_queue *q = checkqueue(L, 1, &s);
  qhdr *h = hdrof(s);
  uint64_t cap = q->cap;
  shm_deadline d;
  shm_optdeadline(L, 2, &d);
  if (s->readonly) return luaL_error(L, "attempt to pop from a read-only queue");
  for (;;) {
    uint64_t head = LOAD(&h->head), tail = q->tail;
    const char *why;
    uint32_t len;
    size_t at;
    if (tail - head > cap || tail == head) {
      /* looks empty: look at the writers' real tail (after `closed`: a
       * close takes the writers' lock, so no push commits after it) */
      int closed = (int)LOAD(&h->closed), en;
      tail = LOAD(&h->tail);
      if (LOAD(&h->head) != head) continue; /* another reader moved: again */
      if (tail - head > cap) return corrupt(L, "head and tail out of range");
      q->tail = tail;
      if (tail == head) {
        if (closed) return failure(L, Q_TIMEOUT, NULL, 1, "closed");
        en = await(h, &h->tail, tail, &h->nonempty, &h->rsleep, &d);
        if (en == ETIMEDOUT) return failure(L, Q_TIMEOUT, NULL, 1, "timeout");
        if (en == EINTR) return failure(L, Q_TIMEOUT, NULL, 1, "interrupted");
        continue;
      }
    }
    /* [head, tail) holds whole records and stays put while head does */
    why = readlen(s, cap, head, tail, &len, &at);
    if (why != NULL) {
      if (LOAD(&h->head) != head) continue; /* overwritten after a claim: again */
      return corrupt(L, why);
    }
    if (len > q->bufsize || q->buf == NULL) {
      size_t want = len < 256 ? 256 : len;
      char *nb = (char *)realloc(q->buf, want);
      if (nb == NULL) return luaL_error(L, "not enough memory");
      q->buf = nb;
      q->bufsize = want;
    }
    ring_get(dataof(s), cap, advance(at, Q_LENSZ, cap), q->buf, len);
    if (!__atomic_compare_exchange_n(&h->head, &head, head + Q_LENSZ + len, 0, __ATOMIC_SEQ_CST,
                                     __ATOMIC_RELAXED))
      continue; /* another reader claimed it: drop the copy */
    wake(&h->nonfull, &h->wsleep, INT_MAX);
    lua_pushlstring(L, q->buf, len);
    return 1;
  }
}

/***
No more pushes: writers get `false, "closed"`; readers drain what is left, then get
`nil, "closed"`.
@function queue:close
@tparam[opt] number timeout for the writers' lock
@treturn boolean true
@usage q:close() -- readers finish what is queued, then stop
*/
static int q_close(lua_State *L) {
  shm_segment *s;
  shm_deadline d;
  qop op;
  int r;
  shm_queue *q = checkqueue(L, 1, &s);
  shm_optdeadline(L, 2, &d); /* a lock held forever must not hang us forever */
  if (s->readonly) return luaL_error(L, "attempt to close a read-only queue");
  r = qop_begin(&op, q, &d);
  if (r != Q_OK) return failure(L, r, &op, 0, "timeout");
  __atomic_store_n(&op.h->closed, 1, __ATOMIC_SEQ_CST);
  qop_end(&op);
  __atomic_add_fetch(&op.h->nonempty, 1, __ATOMIC_SEQ_CST);
  shm_futex_wake(&op.h->nonempty, INT_MAX);
  __atomic_add_fetch(&op.h->nonfull, 1, __ATOMIC_SEQ_CST);
  shm_futex_wake(&op.h->nonfull, INT_MAX);
  lua_pushboolean(L, 1);
  return 1;
}

/***
Figures: `capacity`, `used` (bytes), `count`, `pushed`, `popped`, `closed`,
`recovered` (locks taken over from a writer that died holding them).
@function queue:stat
@tparam[opt] number timeout for the writers' lock
@treturn table
@usage print(q:stat().count)
*/
static int q_stat(lua_State *L) {
  shm_segment *s;
  shm_deadline d;
  qop op;
  uint64_t head, tail, pushed, count = 0, pos, recovered;
  const char *why = NULL;
  int r, closed;
  shm_queue *q = checkqueue(L, 1, &s);
  shm_optdeadline(L, 2, &d);
  if (s->readonly) return luaL_error(L, "attempt to stat a read-only queue");
  /* Under the writers' lock nothing in [head, tail) can change for any head
   * read meanwhile: count the records there (so popped = pushed - count). */
  r = qop_begin(&op, q, &d);
  if (r != Q_OK) return failure(L, r, &op, 1, "timeout");
  head = LOAD(&op.h->head);
  tail = LOAD(&op.h->tail);
  pushed = op.h->prod.count;
  recovered = op.h->prod.recovered;
  closed = (int)LOAD(&op.h->closed);
  if (tail - head > op.cap) why = "head and tail out of range";
  for (pos = head; why == NULL && pos != tail; count++) {
    uint32_t len;
    size_t at;
    why = readlen(s, op.cap, pos, tail, &len, &at);
    if (why != NULL) break;
    pos += Q_LENSZ + len;
  }
  qop_end(&op);
  if (why != NULL) return corrupt(L, why);
  lua_createtable(L, 0, 7);
  shm_setfield_int(L, "capacity", (lua_Integer)op.cap);
  shm_setfield_int(L, "used", (lua_Integer)(tail - head));
  shm_setfield_int(L, "count", (lua_Integer)count);
  shm_setfield_int(L, "pushed", (lua_Integer)pushed);
  shm_setfield_int(L, "popped", (lua_Integer)(pushed - count));
  shm_setfield_bool(L, "closed", closed);
  shm_setfield_int(L, "recovered", (lua_Integer)recovered);
  return 1;
}

/* q:remove(), q:detach(), tostring: the segment's own methods. */
static int q_segcall(lua_State *L, const char *method) {
  shm_queue *q = (shm_queue *)luaL_checkudata(L, 1, QUEUE_MT);
  (void)q;
  lua_getiuservalue(L, 1, 1);
  lua_getfield(L, -1, method);
  lua_insert(L, -2);
  lua_call(L, 1, LUA_MULTRET);
  return lua_gettop(L) - 1;
}

/***
Remove the queue's segment from the system (as `segment:remove`).
@function queue:remove
@usage q:remove()
*/

/***
Detach the queue's segment (as `segment:detach`); `<close>` does this too (Lua 5.4).
@function queue:detach
@usage q:detach()
*/
static int q_remove(lua_State *L) { return q_segcall(L, "remove"); }
static int q_detach(lua_State *L) { return q_segcall(L, "detach"); }

/***
The segment the queue lives in.
@function queue:segment
@treturn segment
@usage print(q:segment():stat().nattch)
*/
static int q_segment(lua_State *L) {
  luaL_checkudata(L, 1, QUEUE_MT);
  lua_getiuservalue(L, 1, 1);
  return 1;
}

static int q_gc(lua_State *L) {
  shm_queue *q = (shm_queue *)luaL_checkudata(L, 1, QUEUE_MT);
  free(q->buf);
  q->buf = NULL;
  q->bufsize = 0;
  return 0;
}


static int q_tostring(lua_State *L) {
  luaL_checkudata(L, 1, QUEUE_MT);
  lua_getiuservalue(L, 1, 1);
  lua_pushfstring(L, "shm.queue(%s)", luaL_tolstring(L, -1, NULL));
  return 1;
}

/* Wrap segment at 1 as a queue; with a capacity at 2, initialise it first. */
static int q_new(lua_State *L) {
  shm_segment *s = shm_checkopen(L, 1);
  uint64_t cap;
  const char *why;
  shm_queue *q;
  if (!lua_isnoneornil(L, 2)) {
    lua_Integer want = luaL_checkinteger(L, 2);
    qhdr *h = hdrof(s);
    if (s->readonly) return luaL_error(L, "attempt to initialise a read-only segment");
    luaL_argcheck(L, want >= (lua_Integer)Q_MINCAP && want <= UINT32_MAX &&
                     (lua_Unsigned)want <= s->size - Q_HDRSIZE, 2, "capacity out of range");
    memset(h, 0, Q_HDRSIZE);
    h->version = Q_VERSION;
    h->hdrsize = Q_HDRSIZE;
    h->capacity = (uint64_t)want;
    __atomic_store_n(&h->magic, Q_MAGIC, __ATOMIC_RELEASE); /* published last */
  }
  why = readconfig(s, &cap);
  if (why != NULL) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s", why);
    lua_pushinteger(L, EINVAL);
    return 3;
  }
  q = (shm_queue *)lua_newuserdatauv(L, sizeof *q, 1);
  q->seg = s;
  q->cap = cap;
  q->tail = 0;
  q->ctx = shm_getctx(L);
  q->buf = NULL;
  q->bufsize = 0;
  luaL_setmetatable(L, QUEUE_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  return 1;
}

static const luaL_Reg queue_methods[] = {
  {"push", q_push},     {"pop", q_pop},       {"close", q_close},
  {"stat", q_stat},     {"remove", q_remove}, {"detach", q_detach},
  {"segment", q_segment}, {NULL, NULL}};

static const luaL_Reg queue_meta[] = {
  {"__gc", q_gc}, SHM_CLOSE_ENTRY(q_detach) {"__tostring", q_tostring}, {NULL, NULL}};

void shm_open_queue(lua_State *L, int module) {
  luaL_newmetatable(L, QUEUE_MT);
  luaL_setfuncs(L, queue_meta, 0);
  luaL_newlibtable(L, queue_methods);
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, queue_methods, 1); /* upvalue: the metatable */
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lua_pushcfunction(L, q_new);
  lua_setfield(L, module, "queue_new");
  lua_pushinteger(L, Q_HDRSIZE);
  lua_setfield(L, module, "QUEUE_HEADER");
}
