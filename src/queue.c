/*
 * shm.queue: a bounded queue of variable-size messages in one segment, for
 * any number of writer and reader processes.
 *
 * Layout: a header (Q_HDRSIZE bytes) then a byte ring of `capacity` bytes.
 * A message is a 4-byte length and its bytes, written at `tail` (modulo the
 * capacity, wrapping); `head` and `tail` are monotonic 64-bit byte counters.
 * The offsets of the fields specs and tools look at are exported as
 * shm.queue.layout.
 *
 * Writers serialise on the writers' lock (lock.c: a robust lock on one word)
 * and move `tail`.  Readers take no lock: a reader copies the record at
 * `head` out and then claims it with one compare-and-swap of `head`; if
 * another reader claimed it first, the copy is dropped and it tries again.
 * The bytes in [head, tail) cannot change while `head` stays put (writers only
 * write beyond `tail` and below head + capacity), so a copy whose claim
 * succeeds is whole.  Writers and readers never wait for each other.  Writers
 * keep a cached copy of `head` (head_cache), readers one of `tail`, and reload
 * it only when the ring looks full (empty), so a busy writer/reader pair
 * shares little but the messages themselves.
 *
 * Crash safety: a record is complete before `tail` moves.  A writer writes a
 * small journal (pend) just before it commits; whoever next takes the lock
 * from a dead owner rolls that commit forward.  So a writer killed mid-push
 * leaves either no trace or a whole message, never a torn one, and readers
 * are never stuck; a reader killed mid-pop holds nothing.
 *
 * Memory: a POSIX queue's object is sparse but for its header
 * (shm_segment_call); a writer reserves the bytes a record takes, under the
 * lock, before writing them in the ring's first lap (tail < capacity: bytes
 * below tail were all reserved by whoever wrote them), so a full tmpfs is
 * ENOSPC from push, never SIGBUS.
 *
 * Creation: the magic is published last.  Whoever initialises a segment
 * (magic 0) holds the writers' lock meanwhile, so create-or-open racers
 * serialise on it and the first one initialises; an opener that finds magic 0
 * and the lock held waits for the initialiser (bounded; a dead one is taken
 * over by the next creator).
 *
 * Wake-ups: a side that finds the ring empty (full) spins briefly on the
 * other side's index, then registers itself in `rsleep` (`wsleep`) and sleeps
 * on the `nonempty` (`nonfull`) word.  Only the sleeper changes its own
 * registration; a committer touches the word and makes the wake system call
 * only when somebody is registered, so a busy queue makes no system calls.
 *
 * The header lives in memory other processes can write: every field is read
 * once into a local, validated, and only then used.
 *
 * Structure: a core of plain C functions (q_attach, q_push, q_pop, q_setclosed,
 * q_stat) that never see a lua_State, each with one unlock path and an
 * shm_status result; then the binding, which checks arguments and turns
 * statuses into Lua results.  No Lua call is made while the lock is held.
 */
/***
@module shm
*/
#include "shm.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QUEUE_MT "shm.queue"
#define Q_MAGIC 0x4c53484d51554533ULL /* "LSHMQUE3" */
#define Q_VERSION 3u
#define Q_HDRSIZE 1024u
#define Q_MINCAP 16u
#define Q_MAXCAP UINT32_MAX
#define Q_LENSZ 4u
#define Q_SPINS 4000      /* looks before sleeping */
#define Q_CACHELINE 64
#define Q_INIT_WAIT 5.0   /* seconds an opener waits for an initialiser */

/* ---- the shared header ---- */

typedef struct qwriters { /* the writers' line: all but the lock word under the lock */
  shm_lock lock;
  uint64_t head_cache; /* writers' cached copy of head */
  uint64_t count;      /* messages pushed, ever */
  uint64_t pend;       /* journal: the tail being committed, 0 = none */
  uint64_t pend_count;
  uint64_t recovered;  /* locks taken over from a dead owner */
} qwriters;

typedef struct qhdr {
  _Alignas(Q_CACHELINE) uint64_t magic;
  uint32_t version;
  uint32_t hdrsize;
  uint64_t capacity;
  uint32_t closed;
  uint32_t reserved;
  _Alignas(Q_CACHELINE) qwriters writers;
  _Alignas(Q_CACHELINE) uint64_t tail; /* bytes committed, ever */
  _Alignas(Q_CACHELINE) uint64_t head; /* bytes consumed, ever */
  _Alignas(Q_CACHELINE) uint32_t nonempty; /* futex words */
  uint32_t rsleep;                         /* sleepers registered on them */
  _Alignas(Q_CACHELINE) uint32_t nonfull;
  uint32_t wsleep;
} qhdr;

_Static_assert(sizeof(qhdr) <= Q_HDRSIZE, "queue header too large");

/* Results of the core beyond shm_status. */
enum { Q_TOOBIG = SHM_NSTATUS }; /* push: the message can never fit */

/* One process's view of a queue: private memory, validated at attach. */
typedef struct qcore {
  qhdr *h;
  shm_segment *seg;    /* where the ring's memory is reserved as it is first used */
  unsigned char *data; /* the ring */
  uint64_t cap;        /* validated once at attach: later writes to the header's
                          copy by other processes are never trusted */
  uint64_t tail_cache; /* this reader's cached copy of tail */
} qcore;

typedef struct qstat {
  uint64_t capacity, used, count, pushed, popped, recovered;
  int closed;
} qstat;

/* ---- the ring ---- */

static size_t advance(size_t at, size_t n, uint64_t cap) {
  at += n;
  return at >= cap ? at - (size_t)cap : at;
}

#define LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define LOADSC(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)

/* The length of the record at pos, checked to end by tail; its ring offset
 * goes to *at.  NULL, or why the record cannot be there. */
static const char *readlen(const qcore *q, uint64_t pos, uint64_t tail, uint32_t *len, size_t *at) {
  if (tail - pos < Q_LENSZ) return "truncated record";
  *at = (size_t)(pos % q->cap);
  shm_ring_get(q->data, q->cap, *at, len, Q_LENSZ);
  if ((uint64_t)*len > tail - pos - Q_LENSZ) return "record length out of range";
  return NULL;
}

/* The configuration line: NULL, or why this is not a valid queue. */
static const char *readconfig(const qhdr *h, size_t size, uint64_t *cap) {
  if (LOAD(&h->magic) != Q_MAGIC) return "not a queue (bad magic)";
  if (LOAD(&h->version) != Q_VERSION) return "unsupported queue version";
  if (LOAD(&h->hdrsize) != Q_HDRSIZE) return "bad header size";
  *cap = LOAD(&h->capacity);
  if (*cap < Q_MINCAP || *cap > size - Q_HDRSIZE || *cap > Q_MAXCAP)
    return "capacity does not match the segment";
  if (LOAD(&h->closed) > 1) return "bad closed flag";
  return NULL;
}

/* ---- the writers' lock ---- */

/* Roll forward a commit whose writer died after its journal entry. */
static shm_status recover(qcore *q, const char **why) {
  qwriters *w = &q->h->writers;
  uint64_t pend = w->pend, cur = q->h->tail;
  w->recovered++;
  if (pend == 0) return SHM_OK;
  if (pend - cur > q->cap || w->pend_count - w->count > 1) {
    *why = "bad journal entry";
    return SHM_CORRUPT;
  }
  __atomic_store_n(&q->h->tail, pend, __ATOMIC_SEQ_CST);
  w->count = w->pend_count;
  w->pend = 0;
  return SHM_OK;
}

/* Take the writers' lock, repairing after a dead owner.  SHM_OK (held),
 * SHM_CORRUPT (held: the caller releases it), SHM_TIMEOUT (not held). */
static shm_status lock_writers(qcore *q, uint64_t self, const shm_deadline *d, const char **why) {
  shm_status st = shm_lock_acquire(&q->h->writers.lock, self, d);
  if (st == SHM_OWNERDIED) st = recover(q, why);
  return st;
}

static void unlock_writers(qcore *q) { shm_lock_release(&q->h->writers.lock); }

/* ---- waiting ---- */

/* Wait until the other side's index moves on from `seen` (or the queue is
 * closed): spin, then sleep registered in *sleepers on *word.
 * SHM_OK, SHM_TIMEOUT or SHM_INTERRUPTED. */
static shm_status await(qhdr *h, uint64_t *index, uint64_t seen, uint32_t *word, uint32_t *sleepers,
                        const shm_deadline *d) {
  int i, en = 0;
  uint32_t w;
  if (shm_deadline_expired(d)) return SHM_TIMEOUT;
  for (i = 0; i < Q_SPINS; i++) {
    if (LOAD(index) != seen || LOAD(&h->closed)) return SHM_OK;
    shm_cpu_relax();
  }
  __atomic_add_fetch(sleepers, 1, __ATOMIC_SEQ_CST);
  w = LOADSC(word);
  if (LOADSC(index) == seen && !LOADSC(&h->closed)) en = shm_futex_wait(word, w, d);
  __atomic_sub_fetch(sleepers, 1, __ATOMIC_SEQ_CST);
  if (en == ETIMEDOUT) return shm_deadline_expired(d) ? SHM_TIMEOUT : SHM_OK;
  return en == EINTR ? SHM_INTERRUPTED : SHM_OK;
}

/* After a commit: wake sleepers on the other side, if there are any.  The
 * commit's SEQ_CST store of the index comes before this SEQ_CST load. */
static void wake(uint32_t *word, uint32_t *sleepers, int n) {
  if (LOADSC(sleepers) != 0) {
    __atomic_add_fetch(word, 1, __ATOMIC_SEQ_CST);
    shm_futex_wake(word, n);
  }
}

/* ---- the core ---- */

/* Initialise the header of fresh memory (magic 0), under the writers' lock;
 * the lock word is left alone.  The magic is published last. */
static void init_locked(qhdr *h, uint64_t cap) {
  unsigned char *p = (unsigned char *)h;
  size_t lockoff = offsetof(qhdr, writers.lock), after = lockoff + sizeof(shm_lock);
  memset(p, 0, lockoff);
  memset(p + after, 0, Q_HDRSIZE - after);
  h->version = Q_VERSION;
  h->hdrsize = Q_HDRSIZE;
  h->capacity = cap;
  __atomic_store_n(&h->magic, Q_MAGIC, __ATOMIC_RELEASE);
}

/* What q_attach hands shm_lock_init_once's callbacks. */
typedef struct qinit {
  qcore *q;
  size_t size;
  uint64_t cap;
  const char **why;
} qinit;

static void init_cb(void *a) { init_locked(((qinit *)a)->q->h, ((qinit *)a)->cap); }

/* initialised, then a writer died: its journal, if the header is a queue's */
static shm_status repair_cb(void *a) {
  qinit *in = (qinit *)a;
  if (readconfig(in->q->h, in->size, &in->q->cap) != NULL) return SHM_OK; /* (said below) */
  return recover(in->q, in->why);
}

/* View the queue in `size` bytes at `base`.  With cap != 0, fresh memory
 * (magic 0) is initialised as a queue of that capacity (or waited for, when
 * another process does it); with cap == 0 it is only waited for if an
 * initialiser holds the lock.  SHM_OK, SHM_CORRUPT (why: not a queue),
 * SHM_TIMEOUT (an initialiser held the lock for Q_INIT_WAIT seconds). */
static shm_status q_attach(qcore *q, unsigned char *base, size_t size, uint64_t cap, uint64_t self,
                           const char **why) {
  qhdr *h = (qhdr *)(void *)base;
  qinit in = {q, size, cap, why};
  const char *bad;
  shm_status st;
  if (size < Q_HDRSIZE + Q_MINCAP) {
    *why = "segment too small for a queue";
    return SHM_CORRUPT;
  }
  q->h = h;
  q->data = base + Q_HDRSIZE;
  q->cap = 0;
  q->tail_cache = 0;
  st = shm_lock_init_once(&h->writers.lock, &h->magic, self, cap != 0, Q_INIT_WAIT, init_cb, repair_cb, &in);
  if (st == SHM_TIMEOUT) return st;
  bad = readconfig(h, size, &q->cap);
  if (bad != NULL) {
    *why = bad;
    return SHM_CORRUPT;
  }
  return st == SHM_CORRUPT ? st : SHM_OK; /* a bad journal (why set) */
}

/* Back the ring bytes a record at `tail` takes with memory: in the first lap
 * (tail < cap) they may never have been used (a POSIX object is made sparse
 * but for its header); later every byte was written, so reserved, once.  0 or
 * an errno. */
static int reserve_record(qcore *q, uint64_t tail, size_t n) {
  uint64_t end = tail + n;
  if (tail >= q->cap) return 0;
  if (end > q->cap) end = q->cap; /* the rest wraps onto used bytes */
  return shm_segment_reserve(q->seg, Q_HDRSIZE + (size_t)tail, (size_t)(end - tail));
}

/* push under the lock: SHM_OK (committed), SHM_BUSY (full: wait for head to
 * move from *head), SHM_CLOSED, SHM_CORRUPT, SHM_ERRNO (*en: no memory for
 * the record, nothing written). */
static shm_status push_locked(qcore *q, const void *msg, size_t len, uint64_t *head,
                              const char **why, int *en) {
  qhdr *h = q->h;
  qwriters *w = &h->writers;
  uint64_t tail = h->tail, to;
  uint32_t l32 = (uint32_t)len;
  size_t at;
  if (LOAD(&h->closed)) return SHM_CLOSED;
  *head = w->head_cache;
  if (tail - *head > q->cap || q->cap - (tail - *head) < Q_LENSZ + len) {
    *head = LOAD(&h->head); /* looks full: look at the readers' real head */
    if (tail - *head > q->cap) {
      *why = "head and tail out of range";
      return SHM_CORRUPT;
    }
    w->head_cache = *head;
    if (q->cap - (tail - *head) < Q_LENSZ + len) return SHM_BUSY;
  }
  *en = reserve_record(q, tail, Q_LENSZ + len);
  if (*en != 0) return SHM_ERRNO;
  at = (size_t)(tail % q->cap);
  shm_ring_put(q->data, q->cap, at, &l32, Q_LENSZ);
  shm_ring_put(q->data, q->cap, advance(at, Q_LENSZ, q->cap), msg, len);
  /* commit, journalled */
  to = tail + Q_LENSZ + len;
  w->pend_count = w->count + 1;
  __atomic_store_n(&w->pend, to, __ATOMIC_RELEASE);
  __atomic_store_n(&h->tail, to, __ATOMIC_SEQ_CST);
  w->count++;
  __atomic_store_n(&w->pend, 0, __ATOMIC_RELEASE);
  return SHM_OK;
}

/* Add a message, waiting while the ring is full.  SHM_OK, SHM_TIMEOUT,
 * SHM_CLOSED, SHM_INTERRUPTED, SHM_CORRUPT (why), SHM_ERRNO (errno: no
 * memory for it, e.g. ENOSPC), Q_TOOBIG. */
static int q_push(qcore *q, const void *msg, size_t len, const shm_deadline *d, uint64_t self,
                  const char **why) {
  qhdr *h = q->h;
  if (len > q->cap - Q_LENSZ) return Q_TOOBIG;
  for (;;) {
    uint64_t head = 0;
    int en = 0;
    shm_status st = lock_writers(q, self, d, why);
    if (st == SHM_TIMEOUT) return st;
    if (st == SHM_OK) st = push_locked(q, msg, len, &head, why, &en);
    unlock_writers(q);
    if (st == SHM_ERRNO) errno = en;
    if (st == SHM_OK) wake(&h->nonempty, &h->rsleep, 1);
    if (st != SHM_BUSY) return st;
    st = await(h, &h->head, head, &h->nonfull, &h->wsleep, d);
    if (st != SHM_OK) return st;
  }
}

/* Take the oldest message into *buf (grown as needed), its length in *len.
 * SHM_OK, SHM_TIMEOUT, SHM_CLOSED (and drained), SHM_INTERRUPTED,
 * SHM_CORRUPT (why), SHM_ERRNO (errno: ENOMEM). */
static shm_status q_pop(qcore *q, shm_buf *buf, size_t *len, const shm_deadline *d, const char **why) {
  qhdr *h = q->h;
  uint64_t cap = q->cap;
  for (;;) {
    uint64_t head = LOAD(&h->head), tail = q->tail_cache;
    uint32_t n;
    size_t at;
    if (tail - head > cap || tail == head) {
      /* looks empty: look at the writers' real tail (after `closed`: a
       * close takes the writers' lock, so no push commits after it) */
      int closed = (int)LOAD(&h->closed);
      shm_status st;
      tail = LOAD(&h->tail);
      if (LOAD(&h->head) != head) continue; /* another reader moved: again */
      if (tail - head > cap) {
        *why = "head and tail out of range";
        return SHM_CORRUPT;
      }
      q->tail_cache = tail;
      if (tail == head) {
        if (closed) return SHM_CLOSED;
        st = await(h, &h->tail, tail, &h->nonempty, &h->rsleep, d);
        if (st != SHM_OK) return st;
        continue;
      }
    }
    /* [head, tail) holds whole records and stays put while head does */
    *why = readlen(q, head, tail, &n, &at);
    if (*why != NULL) {
      if (LOAD(&h->head) != head) continue; /* overwritten after a claim: again */
      return SHM_CORRUPT;
    }
    if (shm_buf_reserve(buf, n) != 0) {
      errno = ENOMEM;
      return SHM_ERRNO;
    }
    shm_ring_get(q->data, cap, advance(at, Q_LENSZ, cap), buf->p, n);
    if (!__atomic_compare_exchange_n(&h->head, &head, head + Q_LENSZ + n, 0, __ATOMIC_SEQ_CST,
                                     __ATOMIC_RELAXED))
      continue; /* another reader claimed it: drop the copy */
    wake(&h->nonfull, &h->wsleep, INT_MAX);
    *len = n;
    return SHM_OK;
  }
}

/* Set the closed flag under the lock: closed (and wake everybody, so that
 * blocked readers and writers see it), or open again (q:reopen).  SHM_OK,
 * SHM_TIMEOUT, SHM_CORRUPT (why). */
static shm_status q_setclosed(qcore *q, int closed, const shm_deadline *d, uint64_t self,
                              const char **why) {
  qhdr *h = q->h;
  shm_status st = lock_writers(q, self, d, why);
  if (st == SHM_TIMEOUT) return st;
  if (st == SHM_OK) __atomic_store_n(&h->closed, closed ? 1u : 0u, __ATOMIC_SEQ_CST);
  unlock_writers(q);
  if (st != SHM_OK || !closed) return st;
  __atomic_add_fetch(&h->nonempty, 1, __ATOMIC_SEQ_CST);
  shm_futex_wake(&h->nonempty, INT_MAX);
  __atomic_add_fetch(&h->nonfull, 1, __ATOMIC_SEQ_CST);
  shm_futex_wake(&h->nonfull, INT_MAX);
  return SHM_OK;
}

/* Count what is queued, under the lock: nothing in [head, tail) can change
 * then for any head read meanwhile (so popped = pushed - count). */
static shm_status stat_locked(qcore *q, qstat *st, const char **why) {
  qhdr *h = q->h;
  uint64_t head = LOAD(&h->head), tail = LOAD(&h->tail), pos;
  st->capacity = q->cap;
  st->pushed = h->writers.count;
  st->recovered = h->writers.recovered;
  st->closed = (int)LOAD(&h->closed);
  st->used = tail - head;
  st->count = 0;
  if (tail - head > q->cap) {
    *why = "head and tail out of range";
    return SHM_CORRUPT;
  }
  for (pos = head; pos != tail; st->count++) { /* at most cap / Q_LENSZ records */
    uint32_t len;
    size_t at;
    *why = readlen(q, pos, tail, &len, &at);
    if (*why != NULL) return SHM_CORRUPT;
    pos += Q_LENSZ + len;
  }
  st->popped = st->pushed - st->count;
  return SHM_OK;
}

/* Figures.  SHM_OK, SHM_TIMEOUT, SHM_CORRUPT (why). */
static shm_status q_stat(qcore *q, qstat *st, const shm_deadline *d, uint64_t self, const char **why) {
  shm_status r = lock_writers(q, self, d, why);
  if (r == SHM_TIMEOUT) return r;
  if (r == SHM_OK) r = stat_locked(q, st, why);
  unlock_writers(q);
  return r;
}

/* ---- the binding ---- */

typedef struct shm_queue {
  qcore core;
  shm_segment *seg; /* kept alive by the user value */
  shm_ctx *ctx;
  shm_buf buf;      /* pop's staging buffer */
  int lent;         /* buf is lent to an FFI pop making its string */
} shm_queue;

/* The queue at idx, attached.  The methods carry the metatable as their
 * upvalue: comparing with it is cheaper than looking the class up. */
static shm_queue *checkqueue(lua_State *L, int idx) {
  shm_queue *q = (shm_queue *)shm_checkupclass(L, idx, QUEUE_MT);
  if (q->seg->addr == NULL) luaL_error(L, "attempt to use a detached queue");
  return q;
}

static shm_queue *checkwritable(lua_State *L, int idx, const char *what) {
  shm_queue *q = checkqueue(L, idx);
  if (q->seg->readonly) luaL_error(L, "attempt to %s a read-only queue", what);
  return q;
}

/* Lua results for a status other than SHM_OK: `fail, "timeout"` (and
 * "closed", "interrupted"), where fail is nil or false; raises for a
 * corrupted queue; `nil, message, errno` for a failed system call. */
static int failure(lua_State *L, int st, const char *why, int nilfirst) {
  int en = errno;
  switch (st) {
  case SHM_CORRUPT:
    return luaL_error(L, "shm.queue: corrupted queue (%s)", why);
  case SHM_ERRNO:
    return shm_fail(L, en, "shm.queue");
  default:
    if (nilfirst) lua_pushnil(L);
    else lua_pushboolean(L, 0);
    lua_pushstring(L, st == SHM_CLOSED ? "closed" : st == SHM_INTERRUPTED ? "interrupted" : "timeout");
    return 2;
  }
}

/***
A bounded queue of variable-size messages in a segment, for any number of writer
and reader processes (see `shm.queue.create`).

Result shapes, for every method: a wait that ends without success gives
`false` (push, close) or `nil` (pop, stat) and a reason, `"timeout"`,
`"closed"` or `"interrupted"`.  The writers' lock is robust: if its word names
a process that is not running (a writer killed holding it, or scribbled
bytes), it is taken over and the queue repaired (`stat().recovered` counts
these); if it names a live process, callers wait for their timeout.  A header
whose fields are out of range raises `shm.queue: corrupted queue (...)`.
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
@error `nil, message, errno` when no memory can back the message (`ENOSPC`: the
tmpfs of a POSIX queue is full); nothing is pushed
@raise if `msg` can never fit, or the header is corrupted
@usage assert(q:push("job 42", 1))
*/
static int l_push(lua_State *L) {
  shm_queue *q = checkwritable(L, 1, "push to");
  size_t len;
  const char *msg = luaL_checklstring(L, 2, &len), *why = NULL;
  shm_deadline d;
  int st;
  shm_optdeadline(L, 3, &d);
  st = q_push(&q->core, msg, len, &d, shm_ctx_self(q->ctx), &why);
  if (st == SHM_OK) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (st == Q_TOOBIG)
    return luaL_error(L, "message of %I bytes can never fit in a queue of capacity %I",
                      (lua_Integer)len, (lua_Integer)q->core.cap);
  if (st == SHM_ERRNO) {
    int en = errno;
    return shm_fail(L, en, "q:push(%s)", shm_inseg_objname(L, 1));
  }
  return failure(L, st, why, 0);
}

/***
Take the oldest message; blocks while the queue is empty.
@function queue:pop
@tparam[opt] number timeout seconds; `0` tries once, `nil` waits forever
@treturn string the message
@treturn[2] nil
@treturn[2] string `"timeout"`, `"closed"` (closed and drained) or `"interrupted"`
@raise if the header or a record is corrupted
@usage for msg in function() return q:pop() end do print(msg) end
*/
static int l_pop(lua_State *L) {
  shm_queue *q = checkwritable(L, 1, "pop from");
  shm_deadline d;
  const char *why = NULL;
  size_t len = 0;
  shm_status st;
  shm_buf own = {NULL, 0};
  shm_optdeadline(L, 2, &d);
  /* (while an FFI pop holds the handle's buffer, a finalizer's pop copies
   * into one of its own) */
  st = q_pop(&q->core, q->lent ? &own : &q->buf, &len, &d, &why);
  if (st != SHM_OK) {
    shm_buf_free(&own);
    return failure(L, st, why, 1);
  }
  shm_pushbuf(L, &q->buf, q->lent, &own, len); /* (a finalizer may pop from this queue) */
  return 1;
}

/* q:close([timeout]), q:reopen([timeout]): true, or false, "timeout". */
static int setclosed(lua_State *L, const char *what, int closed) {
  shm_queue *q = checkwritable(L, 1, what);
  shm_deadline d;
  const char *why = NULL;
  shm_status st;
  shm_optdeadline(L, 2, &d);
  st = q_setclosed(&q->core, closed, &d, shm_ctx_self(q->ctx), &why);
  if (st != SHM_OK) return failure(L, st, why, 0);
  lua_pushboolean(L, 1);
  return 1;
}

/***
No more pushes: writers get `false, "closed"`; readers drain what is left, then get
`nil, "closed"`.
@function queue:close
@tparam[opt] number timeout for the writers' lock; `nil` waits forever
@treturn boolean `true`
@treturn[2] boolean `false`
@treturn[2] string `"timeout"`
@usage q:close() -- readers finish what is queued, then stop
*/
static int l_close(lua_State *L) { return setclosed(L, "close", 1); }

/***
Undo `close`: writers can push again; what is still queued stays.  The way back
for a queue a previous run left closed (`queue.open` attaches it as it is,
closed or not).  Readers that already got `nil, "closed"` are not called back.
@function queue:reopen
@tparam[opt] number timeout for the writers' lock; `nil` waits forever
@treturn boolean `true`
@treturn[2] boolean `false`
@treturn[2] string `"timeout"`
@usage local q = assert(shm.queue.open("/jobs", 1024 * 1024))
if q:stat().closed then q:reopen() end
*/
static int l_reopen(lua_State *L) { return setclosed(L, "reopen", 0); }

/***
Figures: <code>capacity</code>, `used` (bytes), `count`, `pushed`, `popped`, `closed`,
`recovered` (locks taken over from a writer that died holding them).
@function queue:stat
@tparam[opt] number timeout for the writers' lock; `nil` waits forever
@treturn table
@treturn[2] nil
@treturn[2] string `"timeout"`
@usage print(q:stat().count)
*/
static int l_stat(lua_State *L) {
  shm_queue *q = checkwritable(L, 1, "stat");
  shm_deadline d;
  const char *why = NULL;
  qstat s;
  shm_status st;
  shm_optdeadline(L, 2, &d);
  st = q_stat(&q->core, &s, &d, shm_ctx_self(q->ctx), &why);
  if (st != SHM_OK) return failure(L, st, why, 1);
  lua_createtable(L, 0, 7);
  shm_setfield_int(L, "capacity", (lua_Integer)s.capacity);
  shm_setfield_int(L, "used", (lua_Integer)s.used);
  shm_setfield_int(L, "count", (lua_Integer)s.count);
  shm_setfield_int(L, "pushed", (lua_Integer)s.pushed);
  shm_setfield_int(L, "popped", (lua_Integer)s.popped);
  shm_setfield_bool(L, "closed", s.closed);
  shm_setfield_int(L, "recovered", (lua_Integer)s.recovered);
  return 1;
}

/* q:remove(), q:detach(): the segment's own methods. */
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
static int l_remove(lua_State *L) { return shm_inseg_call(L, QUEUE_MT, "remove"); }
static int l_detach(lua_State *L) { return shm_inseg_call(L, QUEUE_MT, "detach"); }

/***
The segment the queue lives in.
@function queue:segment
@treturn segment
@usage print(q:segment():stat().nattch)
*/
static int l_segment(lua_State *L) { return shm_inseg_segment(L, QUEUE_MT); }

static int l_gc(lua_State *L) {
  shm_queue *q = (shm_queue *)shm_checkclass(L, 1, QUEUE_MT);
  shm_buf_free(&q->buf);
  return 0;
}

static int l_tostring(lua_State *L) { return shm_inseg_tostring(L, QUEUE_MT); }

/* ---- constructors ---- */

/* Wrap the segment at idx (attached, from this module) as a queue; cap 0:
 * open only.  Pushes the queue, or nil, message, errno. */
static int newqueue(lua_State *L, int idx, int keyidx, uint64_t cap, const char *fname, int created) {
  shm_segment *s = shm_checkopen(L, idx);
  shm_ctx *ctx = shm_getctx(L);
  const char *why = NULL;
  qcore core;
  shm_status st = q_attach(&core, s->addr, s->size, cap, shm_ctx_self(ctx), &why);
  shm_queue *q;
  if (st == SHM_TIMEOUT)
    return shm_inseg_refuse(L, idx, keyidx, created, fname,
                            "still being initialised by another process (timeout)", ETIMEDOUT);
  if (st != SHM_OK) return shm_inseg_refuse(L, idx, keyidx, created, fname, why, EINVAL);
  q = (shm_queue *)lua_newuserdatauv(L, sizeof *q, 1);
  core.seg = s;
  q->core = core;
  q->seg = s;
  q->ctx = ctx;
  q->buf.p = NULL;
  q->buf.size = 0;
  q->lent = 0;
  luaL_setmetatable(L, QUEUE_MT);
  lua_pushvalue(L, idx);
  lua_setiuservalue(L, -2, 1);
  return 1;
}

/***
Make a queue: a bounded queue of variable-size messages in one new segment, for
any number of writer and reader processes (no message lost, duplicated, torn
or reordered per writer).  A POSIX queue's memory is committed as it is used:
only its header page is reserved here, the ring as the writers first reach each
part of it (see `queue:push`).
@function queue.create
@tparam integer|string key_or_name as for `create`
@tparam integer capacity bytes for messages (each takes 4 bytes more), 16 to 2^32-1
@tparam[opt="0600"] integer|string mode
@treturn queue
@error `nil, message, errno` (`EEXIST` if the segment exists)
@usage local q = assert(shm.queue.create("/jobs", 1024 * 1024))
*/
static int l_create(lua_State *L) {
  uint64_t cap = shm_checkcapacity(L, 2, Q_MINCAP, Q_MAXCAP);
  /* the ring's memory: as it is used */
  if (shm_inseg_make(L, 1, (lua_Integer)(Q_HDRSIZE + cap), Q_HDRSIZE, "shm.queue.create")) return 3;
  return newqueue(L, 4, 1, cap, "shm.queue.create", 1);
}

/***
Attach an existing queue (its header is validated first); with <code>capacity</code>, a
missing one is created, atomically: processes racing to create-or-open one
queue all end up on the same working queue.  An opener that finds the queue
being initialised by another process waits for it (up to 5 s; a dead
initialiser is taken over).  An existing queue keeps its own capacity: a
larger one opens, a smaller one fails with `EINVAL` in capacity terms
(`shm.queue.open(/jobs): exists with capacity 65536, 1048576 asked`).  A queue
left closed (by a previous run) opens closed: `queue:reopen` takes pushes again.
A segment whose first 8 bytes are zero counts as fresh and is made a queue when
<code>capacity</code> is given.
@function queue.open
@tparam integer|string key_or_name
@tparam[opt] integer capacity create it with this capacity if it is missing
@tparam[opt="0600"] integer|string mode for a queue this call creates
@treturn queue
@error `nil, message, errno` (`ENOENT`; `EINVAL`: not a valid queue)
@usage local q = assert(shm.queue.open("/jobs"))
local q2 = assert(shm.queue.open("/jobs", 1024 * 1024)) -- create or open
*/
/* The segment layer's "exists with N bytes, M asked" (the segment smaller
 * than the capacity asked needs), on top of the stack, in capacity terms. */
static void capacity_terms(lua_State *L) {
  unsigned long long have, asked;
  const char *msg = lua_tostring(L, -2), *p = msg != NULL ? strstr(msg, "): exists with ") : NULL;
  if (p != NULL && sscanf(p, "): exists with %llu bytes, %llu asked", &have, &asked) == 2 &&
      have >= Q_HDRSIZE && asked >= Q_HDRSIZE) {
    lua_pushlstring(L, msg, (size_t)(p - msg));
    lua_pushfstring(L, "%s): exists with capacity %I, %I asked", lua_tostring(L, -1),
                    (lua_Integer)(have - Q_HDRSIZE), (lua_Integer)(asked - Q_HDRSIZE));
    lua_replace(L, -4);
    lua_pop(L, 1);
  }
}

static int l_open(lua_State *L) {
  uint64_t cap = lua_isnoneornil(L, 2) ? 0 : shm_checkcapacity(L, 2, Q_MINCAP, Q_MAXCAP);
  shm_optmode(L, 3, 0600); /* checked here: the segment layer's own position is #4 */
  if (shm_inseg_make(L, 0, cap != 0 ? (lua_Integer)(Q_HDRSIZE + cap) : 0, Q_HDRSIZE,
                     "shm.queue.open")) {
    capacity_terms(L);
    return 3;
  }
  return newqueue(L, 4, 1, cap, "shm.queue.open", 0);
}

static const luaL_Reg queue_methods[] = {
  {"push", l_push},       {"pop", l_pop},       {"close", l_close},
  {"reopen", l_reopen},   {"stat", l_stat},       {"remove", l_remove}, {"detach", l_detach},
  {"segment", l_segment}, {NULL, NULL}};

static const luaL_Reg queue_meta[] = {
  {"__gc", l_gc}, SHM_CLOSE_ENTRY(l_detach) {"__tostring", l_tostring}, {NULL, NULL}};

/***
Where the queue's fields are, in bytes from the start of its segment: for tools
and tests that look at the raw memory (`header` is the header's size, the ring
follows it).  Fields: `header`, `magic`, <code>capacity</code>, `closed`, <code>lock</code> (the
writers' lock word), `tail`, `head`.
@table queue.layout
*/
static void pushlayout(lua_State *L) {
  lua_createtable(L, 0, 7);
  shm_setfield_int(L, "header", Q_HDRSIZE);
  shm_setfield_int(L, "magic", (lua_Integer)offsetof(qhdr, magic));
  shm_setfield_int(L, "capacity", (lua_Integer)offsetof(qhdr, capacity));
  shm_setfield_int(L, "closed", (lua_Integer)offsetof(qhdr, closed));
  shm_setfield_int(L, "lock", (lua_Integer)offsetof(qhdr, writers.lock));
  shm_setfield_int(L, "tail", (lua_Integer)offsetof(qhdr, tail));
  shm_setfield_int(L, "head", (lua_Integer)offsetof(qhdr, head));
}

/* ---- FFI entry points (lua/shm/ffi.lua under LuaJIT) ----
 * push and pop as plain C functions, reached through a table of function
 * pointers (shm.queue._ffi, a light userdata).  `ud` is a queue's userdata
 * (the caller checked its class).  A timeout < 0 means none (wait forever).
 * They return an shm_status (or Q_TOOBIG), or SHM_FFI_FALLBACK having done
 * nothing, for a call l_push/l_pop must answer (detached, read-only). */
static int ffi_push(void *ud, const char *msg, size_t len, double timeout, const char **why) {
  shm_queue *q = (shm_queue *)ud;
  shm_deadline d;
  int st;
  if (q->seg->addr == NULL || q->seg->readonly) return SHM_FFI_FALLBACK;
  if (timeout < 0) d.forever = 1;
  else shm_deadline_after(&d, timeout);
  *why = NULL;
  st = q_push(&q->core, msg, len, &d, shm_ctx_self(q->ctx), why);
  return st == SHM_ERRNO ? SHM_FFI_FALLBACK : st; /* nothing pushed: l_push says why */
}

/* The message is in the handle's buffer, lent to the caller until it calls
 * done: making its string can run a finalizer that pops from this queue,
 * which then takes the C API's path into a buffer of its own.  The length is
 * a double: reading it makes no Lua object (so no finalizer runs before
 * both results are read). */
static int ffi_pop(void *ud, double timeout, const char **p, double *len, const char **why) {
  shm_queue *q = (shm_queue *)ud;
  shm_deadline d;
  size_t n = 0;
  int st;
  if (q->seg->addr == NULL || q->seg->readonly || q->lent) return SHM_FFI_FALLBACK;
  if (timeout < 0) d.forever = 1;
  else shm_deadline_after(&d, timeout);
  *why = NULL;
  st = q_pop(&q->core, &q->buf, &n, &d, why);
  if (st == SHM_ERRNO) return SHM_FFI_FALLBACK; /* nothing taken: l_pop says why */
  *len = (double)n;
  *p = q->buf.p;
  q->lent = st == SHM_OK;
  return st;
}

/* The caller of pop made its string: the buffer is the handle's again. */
static void ffi_done(void *ud) {
  ((shm_queue *)ud)->lent = 0;
}

/* Keep in step with the cdef in lua/shm/ffi.lua. */
typedef struct shm_queue_ffi_api {
  int version;
  int (*push)(void *, const char *, size_t, double, const char **);
  int (*pop)(void *, double, const char **, double *, const char **);
  void (*done)(void *);
} shm_queue_ffi_api;

static const shm_queue_ffi_api queue_ffi = {2, ffi_push, ffi_pop, ffi_done};

void shm_open_queue(lua_State *L, int module, int methods) {
  (void)methods;
  shm_newupclass(L, QUEUE_MT, queue_methods, queue_meta);
  shm_inseg_constructors(L, l_create, l_open); /* shm.queue */
  pushlayout(L);
  lua_setfield(L, -2, "layout");
  lua_pushlightuserdata(L, (void *)&queue_ffi); /* for lua/shm/ffi.lua */
  lua_setfield(L, -2, "_ffi");
  lua_setfield(L, module, "queue");
}
