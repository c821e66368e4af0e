/*
 * shm.queue: a bounded queue of variable-size messages in one segment, for
 * any number of writer and reader processes.
 *
 * Layout: a header (Q_HDRSIZE bytes) then a byte ring of `capacity` bytes.
 * A message is a 4-byte length and its bytes, written at `tail` (modulo the
 * capacity, wrapping); `head` and `tail` are monotonic 64-bit byte counters.
 * A robust, process-shared mutex guards the header and the ring: a writer
 * killed mid-push dies before moving `tail`, so nothing torn is ever visible,
 * and the next locker repairs the counters.
 *
 * Wake-ups: a process that finds the queue empty (full) spins briefly on the
 * `nonempty` (`nonfull`) sequence word, then registers itself in `rsleep`
 * (`wsleep`) and sleeps on that word with a futex.  Only the sleeper changes
 * its registration; a committer bumps the word and makes the wake system call
 * only when somebody is registered, so a busy queue makes no system calls.
 *
 * The header lives in memory other processes can write: every field is read
 * once into a local, validated, and only then used.  No Lua API call that can
 * raise is made while the mutex is held.
 */
#include "shm.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define QUEUE_MT "shm.queue"
#define Q_MAGIC 0x4c53484d51554531ULL /* "LSHMQUE1" */
#define Q_VERSION 1u
#define Q_HDRSIZE 256u
#define Q_MINCAP 16u
#define Q_LENSZ 4u
#define Q_SPINS 4000

typedef struct qhdr {
  uint64_t magic;
  uint32_t version;
  uint32_t hdrsize;
  uint64_t capacity;
  uint64_t head;     /* bytes consumed, ever */
  uint64_t tail;     /* bytes committed, ever */
  uint64_t pushed;   /* messages */
  uint64_t popped;
  uint32_t closed;
  uint32_t reserved;
  uint32_t nonempty; /* futex words: bumped on push / pop */
  uint32_t nonfull;
  uint32_t rsleep;   /* sleepers registered on them */
  uint32_t wsleep;
  char pad[64];
  pthread_mutex_t lock;
} qhdr;

_Static_assert(sizeof(qhdr) <= Q_HDRSIZE, "queue header too large");

typedef struct shm_queue {
  char *buf; /* pop's staging buffer: filled under the lock, pushed after */
  size_t bufsize;
} shm_queue;

/* ---- the ring ---- */

static void ring_put(unsigned char *data, uint64_t cap, uint64_t pos, const void *src, size_t n) {
  size_t at = (size_t)(pos % cap), first = n < cap - at ? n : (size_t)(cap - at);
  memcpy(data + at, src, first);
  memcpy(data, (const char *)src + first, n - first);
}

static void ring_get(const unsigned char *data, uint64_t cap, uint64_t pos, void *dst, size_t n) {
  size_t at = (size_t)(pos % cap), first = n < cap - at ? n : (size_t)(cap - at);
  memcpy(dst, data + at, first);
  memcpy((char *)dst + first, data, n - first);
}

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/* ---- header access and validation ---- */

typedef struct qview { /* one validated reading of the header */
  uint64_t cap, head, tail;
  int closed;
} qview;

static qhdr *hdrof(shm_segment *s) { return (qhdr *)(void *)s->addr; }
static unsigned char *dataof(shm_segment *s) { return s->addr + Q_HDRSIZE; }

/* Returns NULL, or why the header is not a valid queue. */
static const char *readview(shm_segment *s, qview *v) {
  qhdr *h = hdrof(s);
  if (s->size < Q_HDRSIZE + Q_MINCAP) return "segment too small for a queue";
  if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != Q_MAGIC) return "not a queue (bad magic)";
  if (__atomic_load_n(&h->version, __ATOMIC_RELAXED) != Q_VERSION) return "unsupported queue version";
  if (__atomic_load_n(&h->hdrsize, __ATOMIC_RELAXED) != Q_HDRSIZE) return "bad header size";
  v->cap = __atomic_load_n(&h->capacity, __ATOMIC_RELAXED);
  v->head = __atomic_load_n(&h->head, __ATOMIC_RELAXED);
  v->tail = __atomic_load_n(&h->tail, __ATOMIC_RELAXED);
  v->closed = (int)__atomic_load_n(&h->closed, __ATOMIC_RELAXED);
  if (v->cap < Q_MINCAP || v->cap > s->size - Q_HDRSIZE || v->cap > UINT32_MAX)
    return "capacity does not match the segment";
  if (v->tail - v->head > v->cap) return "head and tail out of range";
  if (v->closed != 0 && v->closed != 1) return "bad closed flag";
  return NULL;
}

/* Count the records between head and tail, validating each length. */
static const char *recount(shm_segment *s, const qview *v, uint64_t *count) {
  uint64_t pos = v->head;
  *count = 0;
  while (pos != v->tail) {
    uint32_t len;
    if (v->tail - pos < Q_LENSZ) return "truncated record";
    ring_get(dataof(s), v->cap, pos, &len, Q_LENSZ);
    if ((uint64_t)len > v->tail - pos - Q_LENSZ) return "record length out of range";
    pos += Q_LENSZ + len;
    ++*count;
  }
  return NULL;
}

/* ---- locking ---- */

enum { Q_OK = 0, Q_TIMEOUT = 1, Q_CORRUPT = 2, Q_ERRNO = 3 };

typedef struct qlock {
  const char *why; /* Q_CORRUPT */
  int en;          /* Q_ERRNO */
} qlock;

/* Lock, repairing after a dead owner; fills *v with a validated header. */
static int qlock_acquire(shm_segment *s, const shm_deadline *d, qview *v, qlock *ql) {
  qhdr *h = hdrof(s);
  int r = d->forever ? pthread_mutex_lock(&h->lock)
                     : pthread_mutex_clocklock(&h->lock, CLOCK_MONOTONIC, &d->at);
  if (r == ETIMEDOUT) return Q_TIMEOUT;
  if (r != 0 && r != EOWNERDEAD) {
    ql->en = r;
    return Q_ERRNO;
  }
  if (r == EOWNERDEAD) pthread_mutex_consistent(&h->lock);
  ql->why = readview(s, v);
  if (ql->why == NULL && r == EOWNERDEAD) {
    /* the dead owner may have moved tail or head but not the counters */
    uint64_t count;
    ql->why = recount(s, v, &count);
    if (ql->why == NULL) h->pushed = h->popped + count;
  }
  if (ql->why != NULL) {
    pthread_mutex_unlock(&h->lock);
    return Q_CORRUPT;
  }
  return Q_OK;
}

/* ---- the object ---- */

static shm_queue *checkqueue(lua_State *L, int idx, shm_segment **ps) {
  shm_queue *q = (shm_queue *)luaL_checkudata(L, idx, QUEUE_MT);
  lua_getiuservalue(L, idx, 1);
  *ps = (shm_segment *)lua_touserdata(L, -1);
  lua_pop(L, 1); /* kept alive by the queue's user value */
  if (*ps == NULL || (*ps)->addr == NULL) luaL_error(L, "attempt to use a detached queue");
  return q;
}

static int corrupt(lua_State *L, const char *why) {
  return luaL_error(L, "shm.queue: corrupted queue (%s)", why);
}

/* Failures of lock acquisition, as results: timeout, corrupted, errno. */
static int lockfail(lua_State *L, int r, const qlock *ql, int nilfirst) {
  if (r == Q_CORRUPT) return corrupt(L, ql->why);
  if (r == Q_ERRNO) return shm_fail(L, ql->en, "shm.queue: pthread_mutex_lock");
  if (nilfirst) lua_pushnil(L);
  else lua_pushboolean(L, 0);
  lua_pushliteral(L, "timeout");
  return 2;
}

static int expired(const shm_deadline *d) {
  struct timespec now;
  if (d->forever) return 0;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return now.tv_sec > d->at.tv_sec || (now.tv_sec == d->at.tv_sec && now.tv_nsec >= d->at.tv_nsec);
}

/* Wait until *word moves on from `seen`: spin, then sleep registered in
 * *sleepers.  Returns 0, ETIMEDOUT or EINTR. */
static int await(uint32_t *word, uint32_t *sleepers, uint32_t seen, const shm_deadline *d) {
  int i, en = 0;
  for (i = 0; i < Q_SPINS; i++) {
    if (__atomic_load_n(word, __ATOMIC_ACQUIRE) != seen) return 0;
    cpu_relax();
  }
  __atomic_add_fetch(sleepers, 1, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(word, __ATOMIC_SEQ_CST) == seen) en = shm_futex_wait(word, seen, d);
  __atomic_sub_fetch(sleepers, 1, __ATOMIC_SEQ_CST);
  return en == ETIMEDOUT || en == EINTR ? en : 0;
}

/* Commit side: bump the word, wake only if someone sleeps on it. */
static void signal_word(uint32_t *word, uint32_t *sleepers, int n) {
  __atomic_add_fetch(word, 1, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(sleepers, __ATOMIC_SEQ_CST) != 0) shm_futex_wake(word, n);
}

static int q_push(lua_State *L) {
  shm_segment *s;
  size_t len;
  const char *msg;
  shm_deadline d;
  qhdr *h;
  checkqueue(L, 1, &s);
  msg = luaL_checklstring(L, 2, &len);
  shm_checkdeadline(L, 3, &d);
  if (s->readonly) return luaL_error(L, "attempt to push to a read-only queue");
  h = hdrof(s);
  for (;;) {
    qview v;
    qlock ql;
    uint32_t seen;
    int r = qlock_acquire(s, &d, &v, &ql), en;
    if (r != Q_OK) return lockfail(L, r, &ql, 0);
    if (len > v.cap - Q_LENSZ) {
      pthread_mutex_unlock(&h->lock);
      return luaL_error(L, "message of %I bytes can never fit in a queue of capacity %I",
                        (lua_Integer)len, (lua_Integer)v.cap);
    }
    if (v.closed) {
      pthread_mutex_unlock(&h->lock);
      lua_pushboolean(L, 0);
      lua_pushliteral(L, "closed");
      return 2;
    }
    if (v.cap - (v.tail - v.head) >= Q_LENSZ + len) {
      uint32_t l32 = (uint32_t)len;
      ring_put(dataof(s), v.cap, v.tail, &l32, Q_LENSZ);
      ring_put(dataof(s), v.cap, v.tail + Q_LENSZ, msg, len);
      __atomic_store_n(&h->tail, v.tail + Q_LENSZ + len, __ATOMIC_RELEASE); /* commit */
      h->pushed++;
      pthread_mutex_unlock(&h->lock);
      signal_word(&h->nonempty, &h->rsleep, 1);
      lua_pushboolean(L, 1);
      return 1;
    }
    seen = __atomic_load_n(&h->nonfull, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&h->lock);
    if (expired(&d)) en = ETIMEDOUT;
    else en = await(&h->nonfull, &h->wsleep, seen, &d);
    if (en == EINTR || (en == ETIMEDOUT && expired(&d))) {
      /* one last look before giving up */
      shm_deadline now = {0, {0, 0}};
      r = qlock_acquire(s, &now, &v, &ql);
      if (r == Q_OK) {
        int fits = !v.closed && v.cap - (v.tail - v.head) >= Q_LENSZ + len;
        pthread_mutex_unlock(&h->lock);
        if (fits) continue;
      }
      lua_pushboolean(L, 0);
      lua_pushstring(L, en == EINTR ? "interrupted" : "timeout");
      return 2;
    }
  }
}

static int q_pop(lua_State *L) {
  shm_segment *s;
  shm_queue *q = checkqueue(L, 1, &s);
  shm_deadline d;
  qhdr *h;
  shm_checkdeadline(L, 2, &d);
  if (s->readonly) return luaL_error(L, "attempt to pop from a read-only queue");
  h = hdrof(s);
  for (;;) {
    qview v;
    qlock ql;
    uint32_t seen, len;
    int r = qlock_acquire(s, &d, &v, &ql), en;
    if (r != Q_OK) return lockfail(L, r, &ql, 1);
    if (v.tail != v.head) {
      if (v.tail - v.head < Q_LENSZ) {
        pthread_mutex_unlock(&h->lock);
        return corrupt(L, "truncated record");
      }
      ring_get(dataof(s), v.cap, v.head, &len, Q_LENSZ);
      if ((uint64_t)len > v.tail - v.head - Q_LENSZ) {
        pthread_mutex_unlock(&h->lock);
        return corrupt(L, "record length out of range");
      }
      if (len > q->bufsize || q->buf == NULL) {
        /* grow the staging buffer outside the lock, then look again */
        size_t want = len < 256 ? 256 : len;
        char *nb;
        pthread_mutex_unlock(&h->lock);
        nb = (char *)realloc(q->buf, want);
        if (nb == NULL) return luaL_error(L, "not enough memory");
        q->buf = nb;
        q->bufsize = want;
        continue;
      }
      ring_get(dataof(s), v.cap, v.head + Q_LENSZ, q->buf, len);
      __atomic_store_n(&h->head, v.head + Q_LENSZ + len, __ATOMIC_RELEASE); /* commit */
      h->popped++;
      pthread_mutex_unlock(&h->lock);
      signal_word(&h->nonfull, &h->wsleep, INT_MAX);
      lua_pushlstring(L, q->buf, len);
      return 1;
    }
    if (v.closed) {
      pthread_mutex_unlock(&h->lock);
      lua_pushnil(L);
      lua_pushliteral(L, "closed");
      return 2;
    }
    seen = __atomic_load_n(&h->nonempty, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&h->lock);
    if (expired(&d)) en = ETIMEDOUT;
    else en = await(&h->nonempty, &h->rsleep, seen, &d);
    if (en == EINTR || (en == ETIMEDOUT && expired(&d))) {
      shm_deadline now = {0, {0, 0}};
      r = qlock_acquire(s, &now, &v, &ql);
      if (r == Q_OK) {
        int ready = v.tail != v.head;
        pthread_mutex_unlock(&h->lock);
        if (ready) continue;
      }
      lua_pushnil(L);
      lua_pushstring(L, en == EINTR ? "interrupted" : "timeout");
      return 2;
    }
  }
}

static int q_close(lua_State *L) {
  shm_segment *s;
  shm_deadline d = {1, {0, 0}};
  qview v;
  qlock ql;
  qhdr *h;
  int r;
  checkqueue(L, 1, &s);
  if (s->readonly) return luaL_error(L, "attempt to close a read-only queue");
  h = hdrof(s);
  r = qlock_acquire(s, &d, &v, &ql);
  if (r != Q_OK) return lockfail(L, r, &ql, 0);
  h->closed = 1;
  pthread_mutex_unlock(&h->lock);
  signal_word(&h->nonempty, &h->rsleep, INT_MAX);
  signal_word(&h->nonfull, &h->wsleep, INT_MAX);
  lua_pushboolean(L, 1);
  return 1;
}

static int q_stat(lua_State *L) {
  shm_segment *s;
  shm_deadline d = {1, {0, 0}};
  qview v;
  qlock ql;
  qhdr *h;
  uint64_t pushed, popped;
  int r;
  checkqueue(L, 1, &s);
  h = hdrof(s);
  if (s->readonly) { /* cannot lock: a consistent-enough unlocked reading */
    const char *why = readview(s, &v);
    if (why != NULL) return corrupt(L, why);
  } else {
    r = qlock_acquire(s, &d, &v, &ql);
    if (r != Q_OK) return lockfail(L, r, &ql, 1);
  }
  pushed = h->pushed;
  popped = h->popped;
  if (!s->readonly) pthread_mutex_unlock(&h->lock);
  lua_createtable(L, 0, 6);
  shm_setfield_int(L, "capacity", (lua_Integer)v.cap);
  shm_setfield_int(L, "used", (lua_Integer)(v.tail - v.head));
  shm_setfield_int(L, "count", (lua_Integer)(pushed - popped));
  shm_setfield_int(L, "pushed", (lua_Integer)pushed);
  shm_setfield_int(L, "popped", (lua_Integer)popped);
  shm_setfield_bool(L, "closed", v.closed);
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

static int q_remove(lua_State *L) { return q_segcall(L, "remove"); }
static int q_detach(lua_State *L) { return q_segcall(L, "detach"); }

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

static int q_closemm(lua_State *L) {
  lua_settop(L, 1);
  q_detach(L);
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
  qview v;
  const char *why;
  shm_queue *q;
  if (!lua_isnoneornil(L, 2)) {
    lua_Integer cap = luaL_checkinteger(L, 2);
    qhdr *h = hdrof(s);
    pthread_mutexattr_t a;
    int r;
    if (s->readonly) return luaL_error(L, "attempt to initialise a read-only segment");
    luaL_argcheck(L, cap >= (lua_Integer)Q_MINCAP && cap <= UINT32_MAX &&
                     (lua_Unsigned)cap <= s->size - Q_HDRSIZE, 2, "capacity out of range");
    memset(h, 0, Q_HDRSIZE);
    h->version = Q_VERSION;
    h->hdrsize = Q_HDRSIZE;
    h->capacity = (uint64_t)cap;
    r = pthread_mutexattr_init(&a);
    if (r == 0) r = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    if (r == 0) r = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    if (r == 0) r = pthread_mutex_init(&h->lock, &a);
    pthread_mutexattr_destroy(&a);
    if (r != 0) return shm_fail(L, r, "shm.queue.create: pthread_mutex_init");
    __atomic_store_n(&h->magic, Q_MAGIC, __ATOMIC_RELEASE); /* published last */
  }
  why = readview(s, &v);
  if (why != NULL) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s", why);
    lua_pushinteger(L, EINVAL);
    return 3;
  }
  q = (shm_queue *)lua_newuserdatauv(L, sizeof *q, 1);
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
  {"__gc", q_gc}, {"__close", q_closemm}, {"__tostring", q_tostring}, {NULL, NULL}};

void shm_open_queue(lua_State *L, int module) {
  luaL_newmetatable(L, QUEUE_MT);
  luaL_setfuncs(L, queue_meta, 0);
  luaL_newlib(L, queue_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lua_pushcfunction(L, q_new);
  lua_setfield(L, module, "queue_new");
  lua_pushinteger(L, Q_HDRSIZE);
  lua_setfield(L, module, "QUEUE_HEADER");
}
