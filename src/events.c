/*
 * shm.events: broadcast in one segment.  Any number of publishers and of
 * subscribers, subscribers unknown to the publishers: every subscriber sees
 * every event, in order, or learns how many it missed.
 *
 * Layout: a header (EV_HDRSIZE bytes) then a ring of `ring` bytes (the
 * capacity rounded down to 8).  An event is a record: a 16-byte header (its
 * 64-bit sequence number, its length, a check word) then its bytes, padded to
 * 8; records follow each other around the ring (a record may wrap).  Events
 * are numbered from 1.  The offsets of the header's fields are exported as
 * shm.events.layout.
 *
 * The published state is four words, written only by the lock holder:
 *   newest   the sequence number of the newest event published (0: none)
 *   tailw    where the next event goes: the low 32 bits of its sequence
 *            number and its ring offset, in one word
 *   oldest   the sequence number of the oldest event kept
 *   oldw     the oldest event's low 32 bits and ring offset, in one word
 * A packed word is consistent by itself (one store); its full sequence number
 * is found from a nearby full one (unpack: the kept events number far fewer
 * than 2^31).
 *
 * Publishers serialise on a robust lock (lock.c) and never wait for
 * subscribers: when the ring is full, the oldest records are dropped (oldw,
 * then oldest, move on, and only then are their bytes written over).  Then
 * the record is written, and published by tailw and then newest.
 *
 * Subscribers take no lock.  A subscriber's cursor (a sequence number and a
 * ring offset) is private to its process.  Event s can be read once
 * newest >= s (its bytes were written before); the reader copies the record
 * out, then (after an acquire fence) checks that s >= oldest: a publisher
 * moves oldest past s before it writes over s, so a copy that passes that
 * check is whole (a seqlock whose sequence is `oldest`).  A copy that fails
 * it is dropped and the subscriber is told how many events it lost, and goes
 * on from the oldest kept one.
 *
 * Crash safety: a publisher killed at any instruction leaves either no trace
 * or a whole event: the stores that publish are ordered so that whoever next
 * takes the lock from the dead owner can finish them (recover: tailw ahead of
 * newest rolls newest forward; oldw ahead of oldest moves oldest on).  Until
 * then subscribers see the state before the publish, which is consistent.
 *
 * Memory: a POSIX ring's object is sparse but for its header
 * (shm_segment_call); a publisher backs the bytes a record takes with memory,
 * under the lock, before it writes them (shm_segment_reserve: two comparisons
 * once this process has reserved them), so a full tmpfs is ENOSPC from
 * publish, never SIGBUS.
 *
 * Wake-ups: a subscriber that finds nothing new spins briefly on `newest`,
 * then raises the `sleepers` flag and sleeps on the `wake` word; a publisher
 * that finds the flag raised lowers it, touches the word and wakes every
 * sleeper with one system call.  So a publish nobody waits for makes no
 * system call, and a burst of publishes makes one for all the sleepers.
 *
 * The header and the records live in memory other processes can write:
 * every field is read once into a local and validated before use; every loop
 * over shared data has a bound; what cannot be right raises
 * `shm.events: corrupted events (reason)`.
 *
 * Structure: a core of plain C functions (ev_attach, ev_publish, ev_cursor,
 * ev_next, ev_stat) that never see a lua_State, each with one unlock path
 * and an shm_status result; then the binding.
 */
/***
@module shm
*/
#include "shm.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

#define EVENTS_MT "shm.events"
#define SUB_MT "shm.subscriber"
#define EV_MAGIC 0x4c53484d45565431ULL /* "LSHMEVT1" */
#define EV_VERSION 1u
#define EV_HDRSIZE 1024u
#define EV_MINCAP 32u
#define EV_MAXCAP UINT32_MAX
#define EV_RECHDR 16u
#define EV_CHECK 0x45564e54u /* "EVNT" */
#define EV_SPIN_NS 10000     /* looking before sleeping: about what a sleep and a wake cost */
#define EV_CACHELINE 64
#define EV_INIT_WAIT 5.0     /* seconds an opener waits for an initialiser */

/* ---- the shared header ---- */

typedef struct evhdr {
  _Alignas(EV_CACHELINE) uint64_t magic;
  uint32_t version;
  uint32_t hdrsize;
  uint64_t capacity;
  _Alignas(EV_CACHELINE) shm_lock lock;
  uint64_t recovered; /* locks taken over from a dead owner (under the lock) */
  _Alignas(EV_CACHELINE) uint64_t newest;
  uint64_t tailw;
  _Alignas(EV_CACHELINE) uint64_t oldest;
  uint64_t oldw;
  _Alignas(EV_CACHELINE) uint32_t wake; /* futex word */
  uint32_t sleepers;                    /* nonzero: somebody may sleep on it */
} evhdr;

_Static_assert(sizeof(evhdr) <= EV_HDRSIZE, "events header too large");

/* A record's header in the ring. */
typedef struct evrec {
  uint64_t seq;
  uint32_t len;
  uint32_t check;
} evrec;

_Static_assert(sizeof(evrec) == EV_RECHDR, "record header size");

/* Results of the core beyond shm_status. */
enum {
  EV_TOOBIG = SHM_NSTATUS, /* publish: the event can never fit */
  EV_LOST                  /* next: the subscriber fell behind (a count goes with it) */
};

/* One process's view: private memory, validated at attach. */
typedef struct evcore {
  evhdr *h;
  shm_segment *seg;    /* where the ring's memory is reserved as it is first used */
  unsigned char *data; /* the ring */
  uint64_t cap;        /* the capacity it was made with */
  uint64_t ring;       /* usable bytes: cap rounded down to 8 */
} evcore;

/* A subscriber's position: the next event's sequence number and offset, and
 * the newest sequence number it has seen published (so that a subscriber
 * behind reads records without touching the line publishers write). */
typedef struct evcursor {
  uint64_t seq;
  uint64_t off;
  uint64_t newest;
} evcursor;

/* A wait that reads the clock only once it has to wait. */
typedef struct evwait {
  double timeout;  /* seconds; < 0: none (forever); 0: only look */
  int started;     /* d is set */
  shm_deadline d;
} evwait;

typedef struct evstat {
  uint64_t capacity, published, oldest, newest, recovered;
} evstat;

#define LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define LOADSC(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)

/* ---- the ring ---- */

static void ring_put(const evcore *e, uint64_t at, const void *src, size_t n) {
  shm_ring_put(e->data, e->ring, at, src, n);
}

static void ring_get(const evcore *e, uint64_t at, void *dst, size_t n) {
  shm_ring_get(e->data, e->ring, at, dst, n);
}

/* The offset n bytes after `at`, around the ring.  at < ring and n <= ring
 * wherever it is called (offsets are validated as they are read, record sizes
 * are at most the ring's), so one subtraction does it: no division on the
 * hot paths (a 64-bit one costs more than the rest of a `next`). */
static uint64_t advance(const evcore *e, uint64_t at, uint64_t n) {
  uint64_t x = at + n;
  if (x >= e->ring) x -= e->ring;
  return x < e->ring ? x : x % e->ring; /* (never: the bounds above) */
}

static uint64_t recsize(uint32_t len) { return EV_RECHDR + (((uint64_t)len + 7) & ~(uint64_t)7); }

static uint32_t reccheck(uint64_t seq, uint32_t len) {
  return len ^ (uint32_t)seq ^ (uint32_t)(seq >> 32) ^ EV_CHECK;
}

/* ---- packed words: low 32 bits of a sequence number, a ring offset ---- */

static uint64_t pack(uint64_t seq, uint64_t off) { return (uint64_t)(uint32_t)seq << 32 | off; }

/* The full sequence number whose low 32 bits the word holds, nearest `ref`. */
static uint64_t unpack_seq(uint64_t w, uint64_t ref) {
  int32_t d = (int32_t)((uint32_t)(w >> 32) - (uint32_t)ref);
  return ref + (uint64_t)(int64_t)d;
}

/* The word's offset, if it is a record's place in the ring. */
static int unpack_off(const evcore *e, uint64_t w, uint64_t *off) {
  *off = (uint32_t)w;
  return *off < e->ring && *off % 8 == 0;
}

/* The configuration line: NULL, or why this is not a valid event ring. */
static const char *readconfig(const evhdr *h, size_t size, uint64_t *cap) {
  if (LOAD(&h->magic) != EV_MAGIC) return "not an event ring (bad magic)";
  if (LOAD(&h->version) != EV_VERSION) return "unsupported event ring version";
  if (LOAD(&h->hdrsize) != EV_HDRSIZE) return "bad header size";
  *cap = LOAD(&h->capacity);
  if (*cap < EV_MINCAP || *cap > size - EV_HDRSIZE || *cap > EV_MAXCAP)
    return "capacity does not match the segment";
  return NULL;
}

/* ---- the publishers' lock ---- */

/* Finish the publish of a publisher that died holding the lock: its stores
 * are ordered so that the packed words lead (see the top of the file). */
static shm_status recover(evcore *e, const char **why) {
  evhdr *h = e->h;
  uint64_t newest = h->newest, oldest = h->oldest, seq;
  h->recovered++;
  seq = unpack_seq(h->tailw, newest + 1);
  if (seq == newest + 2) STORE(&h->newest, ++newest); /* the record was whole */
  else if (seq != newest + 1) {
    *why = "bad tail";
    return SHM_CORRUPT;
  }
  seq = unpack_seq(h->oldw, newest + 1);
  if (seq < oldest || seq > newest + 1) {
    *why = "bad oldest event";
    return SHM_CORRUPT;
  }
  if (seq != oldest) STORE(&h->oldest, seq);
  return SHM_OK;
}

/* Take the lock, repairing after a dead owner.  SHM_OK (held), SHM_CORRUPT
 * (held: the caller releases it), SHM_TIMEOUT (not held). */
static shm_status lock_publishers(evcore *e, uint64_t self, const shm_deadline *d, const char **why) {
  shm_status st = shm_lock_acquire(&e->h->lock, self, d);
  if (st == SHM_OWNERDIED) st = recover(e, why);
  return st;
}

static void unlock_publishers(evcore *e) { shm_lock_release(&e->h->lock); }

/* ---- the core ---- */

/* Initialise the header of fresh memory (magic 0), under the lock; the lock
 * word is left alone.  The magic is published last. */
static void init_locked(evhdr *h, uint64_t cap) {
  unsigned char *p = (unsigned char *)h;
  size_t lockoff = offsetof(evhdr, lock), after = lockoff + sizeof(shm_lock);
  memset(p, 0, lockoff);
  memset(p + after, 0, EV_HDRSIZE - after);
  h->version = EV_VERSION;
  h->hdrsize = EV_HDRSIZE;
  h->capacity = cap;
  h->newest = 0;
  h->oldest = 1;
  h->tailw = pack(1, 0);
  h->oldw = pack(1, 0);
  __atomic_store_n(&h->magic, EV_MAGIC, __ATOMIC_RELEASE);
}

/* What ev_attach hands shm_lock_init_once's callbacks. */
typedef struct evinit {
  evcore *e;
  size_t size;
  uint64_t cap;
  const char **why;
} evinit;

static void init_cb(void *a) { init_locked(((evinit *)a)->e->h, ((evinit *)a)->cap); }

/* initialised, then a publisher died: finish its publish, if the header is a ring's */
static shm_status repair_cb(void *a) {
  evinit *in = (evinit *)a;
  if (readconfig(in->e->h, in->size, &in->e->cap) != NULL) return SHM_OK; /* (said below) */
  in->e->ring = in->e->cap & ~(uint64_t)7;
  return recover(in->e, in->why);
}

/* View the ring in `size` bytes at `base`.  With cap != 0, fresh memory
 * (magic 0) is made an event ring of that capacity (or waited for, when
 * another process does it); with cap == 0 it is only waited for if an
 * initialiser holds the lock.  SHM_OK, SHM_CORRUPT (why: not an event ring),
 * SHM_TIMEOUT (an initialiser held the lock for EV_INIT_WAIT seconds). */
static shm_status ev_attach(evcore *e, unsigned char *base, size_t size, uint64_t cap, uint64_t self,
                            const char **why) {
  evhdr *h = (evhdr *)(void *)base;
  evinit in = {e, size, cap, why};
  const char *bad;
  shm_status st;
  if (size < EV_HDRSIZE + EV_MINCAP) {
    *why = "segment too small for an event ring";
    return SHM_CORRUPT;
  }
  e->h = h;
  e->data = base + EV_HDRSIZE;
  e->cap = 0;
  e->ring = 8;
  st = shm_lock_init_once(&h->lock, &h->magic, self, cap != 0, EV_INIT_WAIT, init_cb, repair_cb, &in);
  if (st == SHM_TIMEOUT) return st;
  bad = readconfig(h, size, &e->cap);
  if (bad != NULL) {
    *why = bad;
    return SHM_CORRUPT;
  }
  e->ring = e->cap & ~(uint64_t)7;
  return st == SHM_CORRUPT ? st : SHM_OK;
}

/* Back the ring bytes of a record of `size` bytes at `off` with memory (it
 * may wrap).  0 or an errno. */
static int reserve_record(const evcore *e, uint64_t off, uint64_t size) {
  uint64_t first = size < e->ring - off ? size : e->ring - off;
  int en = shm_segment_reserve(e->seg, EV_HDRSIZE + (size_t)off, (size_t)first);
  if (en == 0 && size > first) en = shm_segment_reserve(e->seg, EV_HDRSIZE, (size_t)(size - first));
  return en;
}

/* Publish under the lock: drop the oldest records until the new one fits,
 * write it, publish it.  SHM_OK, SHM_CORRUPT (why) or SHM_ERRNO (*en: no
 * memory for the record; nothing changed). */
static shm_status publish_locked(evcore *e, const void *msg, uint32_t len, const char **why, int *en) {
  evhdr *h = e->h;
  uint64_t newest = h->newest, oldest = h->oldest, size = recsize(len);
  uint64_t toff, ooff, count, used, oseq;
  evrec r;
  if (unpack_seq(h->tailw, newest + 1) != newest + 1 || !unpack_off(e, h->tailw, &toff)) {
    *why = "bad tail";
    return SHM_CORRUPT;
  }
  oseq = unpack_seq(h->oldw, newest + 1);
  if (oseq != oldest || oseq > newest + 1 || !unpack_off(e, h->oldw, &ooff)) {
    *why = "bad oldest event";
    return SHM_CORRUPT;
  }
  count = newest + 1 - oseq;
  used = count == 0 ? 0 : toff >= ooff ? toff - ooff : toff + e->ring - ooff;
  if (count != 0 && used == 0) used = e->ring; /* full to the byte */
  if (count > used / EV_RECHDR || (count == 0 && ooff != toff)) {
    *why = "event count does not match the ring";
    return SHM_CORRUPT;
  }
  *en = reserve_record(e, toff, size);
  if (*en != 0) return SHM_ERRNO;
  /* drop the oldest until it fits: at most `count` records */
  while (e->ring - used < size) {
    uint64_t rs;
    if (count == 0) {
      *why = "event count does not match the ring";
      return SHM_CORRUPT;
    }
    ring_get(e, ooff, &r, EV_RECHDR);
    rs = recsize(r.len);
    if (r.seq != oseq || r.check != reccheck(r.seq, r.len) || rs > used) {
      *why = "bad record";
      return SHM_CORRUPT;
    }
    used -= rs;
    ooff = advance(e, ooff, rs);
    oseq++;
    count--;
  }
  if (oseq != oldest) { /* publish the drop before writing over it */
    if (count == 0 && ooff != toff) {
      *why = "event count does not match the ring";
      return SHM_CORRUPT;
    }
    /* release stores, in order (oldw leads, for recover), then a release
     * fence: the stores that write over the dropped records come after
     * them (the writer's half of the seqlock; no full barrier needed) */
    __atomic_store_n(&h->oldw, pack(oseq, ooff), __ATOMIC_RELEASE);
    __atomic_store_n(&h->oldest, oseq, __ATOMIC_RELEASE);
    __atomic_thread_fence(__ATOMIC_RELEASE);
  }
  r.seq = newest + 1;
  r.len = len;
  r.check = reccheck(r.seq, len);
  ring_put(e, advance(e, toff, EV_RECHDR), msg, len);
  ring_put(e, toff, &r, EV_RECHDR);
  __atomic_store_n(&h->tailw, pack(newest + 2, advance(e, toff, size)), __ATOMIC_RELEASE);
  STORE(&h->newest, newest + 1);
  return SHM_OK;
}

/* Publish an event.  SHM_OK, SHM_TIMEOUT (the lock), SHM_CORRUPT (why),
 * SHM_ERRNO (errno: no memory for it), EV_TOOBIG. */
static int ev_publish(evcore *e, const void *msg, size_t len, const shm_deadline *d, uint64_t self,
                      const char **why) {
  evhdr *h = e->h;
  shm_status st;
  int en = 0;
  if (len > e->ring - EV_RECHDR) return EV_TOOBIG;
  st = lock_publishers(e, self, d, why);
  if (st == SHM_TIMEOUT) return st;
  if (st == SHM_OK) st = publish_locked(e, msg, (uint32_t)len, why, &en);
  unlock_publishers(e);
  if (st == SHM_ERRNO) errno = en;
  /* after the SEQ_CST store of newest: a sleeper raised the flag before it
   * looked at newest, or it sees the new newest and does not sleep */
  if (st == SHM_OK && LOADSC(&h->sleepers) != 0 && __atomic_exchange_n(&h->sleepers, 0, __ATOMIC_SEQ_CST)) {
    __atomic_add_fetch(&h->wake, 1, __ATOMIC_SEQ_CST);
    shm_futex_wake(&h->wake, INT_MAX);
  }
  return st;
}

/* Wait until newest moves on from `seen`: spin for EV_SPIN_NS (timed: a
 * pause lasts from 10 to 140 cycles, by processor), then sleep with the
 * `sleepers` flag raised.  SHM_OK, SHM_TIMEOUT or SHM_INTERRUPTED. */
static shm_status await(evhdr *h, uint64_t seen, evwait *wt) {
  const shm_deadline *d = &wt->d;
  struct timespec t0, t;
  int i, en = 0;
  uint32_t w;
  if (wt->timeout == 0) return SHM_TIMEOUT;
  if (!wt->started) {
    wt->started = 1;
    if (wt->timeout < 0) wt->d.forever = 1;
    else shm_deadline_after(&wt->d, wt->timeout);
  } else if (shm_deadline_expired(d)) {
    return SHM_TIMEOUT;
  }
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (i = 1;; i++) {
    if (LOAD(&h->newest) != seen) return SHM_OK;
    shm_cpu_relax();
    if (i % 64 == 0) {
      clock_gettime(CLOCK_MONOTONIC, &t);
      if ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) >= EV_SPIN_NS) break;
    }
  }
  w = LOADSC(&h->wake); /* before the flag: a wake after it changes the word */
  if (LOADSC(&h->sleepers) == 0) STORE(&h->sleepers, 1);
  if (LOADSC(&h->newest) == seen) en = shm_futex_wait(&h->wake, w, d);
  if (en == ETIMEDOUT) return shm_deadline_expired(d) ? SHM_TIMEOUT : SHM_OK;
  return en == EINTR ? SHM_INTERRUPTED : SHM_OK;
}

/* A new cursor: at the next event to be published, or (oldest) at the oldest
 * kept.  SHM_OK, or SHM_CORRUPT (why) with *c unchanged. */
static shm_status ev_cursor(const evcore *e, evcursor *c, int oldest, const char **why) {
  evhdr *h = e->h;
  uint64_t w = LOAD(oldest ? &h->oldw : &h->tailw), newest = LOAD(&h->newest);
  uint64_t seq = unpack_seq(w, newest + 1), off;
  /* tailw leads newest by one event while a publish commits */
  if (seq > newest + (oldest ? 1 : 2) || !unpack_off(e, w, &off)) {
    *why = oldest ? "bad oldest event" : "bad tail";
    return SHM_CORRUPT;
  }
  c->seq = seq;
  c->off = off;
  c->newest = newest;
  return SHM_OK;
}

/* The cursor fell behind: it moves on to the oldest kept event, *lost says
 * how many it missed.  EV_LOST, or SHM_CORRUPT (why). */
static int fell_behind(const evcore *e, evcursor *c, uint64_t *lost, const char **why) {
  evcursor to;
  shm_status st = ev_cursor(e, &to, 1, why);
  if (st != SHM_OK) return st;
  if (to.seq <= c->seq) {
    *why = "bad oldest event";
    return SHM_CORRUPT;
  }
  *lost = to.seq - c->seq;
  *c = to;
  return EV_LOST;
}

/* Reading the next event is three steps: ev_find waits for the event and
 * validates its header, its bytes are copied out (ring_get), ev_confirm
 * checks that the copy is whole and moves the cursor on.  A copy that
 * ev_confirm rejects was written over while it was made: it is dropped.
 * (The copy goes to a private buffer, never straight into a Lua string:
 * making the string can run a finalizer, which could detach the ring or
 * call next on the same subscriber before the copy is confirmed.) */

/* The next event for cursor c: SHM_OK with its header in *r; EV_LOST (c had
 * fallen behind: it now points at the oldest kept event, *lost says how many
 * it missed); SHM_TIMEOUT; SHM_INTERRUPTED; SHM_CORRUPT (why). */
static int ev_find(const evcore *e, evcursor *c, evrec *r, uint64_t *lost, evwait *wt, const char **why) {
  evhdr *h = e->h;
  for (;;) {
    uint64_t s = c->seq;
    shm_status st;
    if (s > c->newest) { /* beyond what it has seen published: look again */
      uint64_t newest = LOAD(&h->newest);
      if (s > newest + 2) { /* (+2: a cursor made while a publish committed) */
        *why = "sequence number went backwards";
        return SHM_CORRUPT;
      }
      c->newest = newest;
      if (s > newest) {
        st = await(h, newest, wt);
        if (st != SHM_OK) return st;
        continue;
      }
    }
    /* A header read while a publisher wrote over it may pass these checks
     * (its length is still bounded): ev_confirm drops what was copied from
     * it.  One that fails them is corruption only if the event is still kept. */
    ring_get(e, c->off, r, EV_RECHDR);
    if (r->seq == s && r->check == reccheck(r->seq, r->len) && r->len <= e->ring - EV_RECHDR) return SHM_OK;
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (s < LOAD(&h->oldest)) return fell_behind(e, c, lost, why);
    *why = "bad record";
    return SHM_CORRUPT;
  }
}

/* After the copy: SHM_OK (it is whole: the cursor moves on; *seq is the
 * event's), EV_LOST (it was written over: drop it; as ev_find) or
 * SHM_CORRUPT (why). */
static int ev_confirm(const evcore *e, evcursor *c, const evrec *r, uint64_t *seq, uint64_t *lost,
                      const char **why) {
  __atomic_thread_fence(__ATOMIC_ACQUIRE);
  if (c->seq < LOAD(&e->h->oldest)) return fell_behind(e, c, lost, why);
  *seq = c->seq;
  c->seq++;
  c->off = advance(e, c->off, recsize(r->len));
  return SHM_OK;
}

/* The next event for cursor c, copied into *buf (grown as needed): its length
 * and sequence number in *len and *seq.  As ev_find and ev_confirm, and
 * SHM_ERRNO (ENOMEM). */
static int ev_next(const evcore *e, evcursor *c, shm_buf *buf, size_t *len, uint64_t *seq,
                   uint64_t *lost, evwait *wt, const char **why) {
  evrec r;
  int st = ev_find(e, c, &r, lost, wt, why);
  if (st != SHM_OK) return st;
  if (shm_buf_reserve(buf, r.len) != 0) {
    errno = ENOMEM;
    return SHM_ERRNO;
  }
  ring_get(e, advance(e, c->off, EV_RECHDR), buf->p, r.len);
  *len = r.len;
  return ev_confirm(e, c, &r, seq, lost, why);
}

/* Figures, without the lock.  SHM_OK or SHM_CORRUPT (why). */
static shm_status ev_stat(const evcore *e, evstat *st, const char **why) {
  evhdr *h = e->h;
  st->capacity = e->cap;
  st->oldest = LOAD(&h->oldest);
  st->newest = st->published = LOAD(&h->newest);
  st->recovered = LOAD(&h->recovered);
  if (st->oldest > st->newest + 1 || st->oldest == 0) {
    *why = "bad oldest event";
    return SHM_CORRUPT;
  }
  return SHM_OK;
}

/* ---- the binding ---- */

typedef struct shm_events {
  evcore core;
  shm_segment *seg; /* kept alive by the user value */
  shm_ctx *ctx;
} shm_events;

typedef struct shm_subscriber {
  shm_events *ev; /* kept alive by the user value */
  evcursor cur;
  shm_buf buf; /* next's staging buffer */
  int lent;    /* buf is lent to an FFI next making its string */
} shm_subscriber;

/* The events object at idx, attached.  The methods carry the metatable as
 * their upvalue (shm_checkupclass). */
static shm_events *checkevents(lua_State *L, int idx) {
  shm_events *e = (shm_events *)shm_checkupclass(L, idx, EVENTS_MT);
  if (e->seg->addr == NULL) luaL_error(L, "attempt to use a detached event ring");
  return e;
}

static shm_subscriber *checksub(lua_State *L, int idx) {
  shm_subscriber *s = (shm_subscriber *)shm_checkupclass(L, idx, SUB_MT);
  if (s->ev->seg->addr == NULL) luaL_error(L, "attempt to use a subscriber of a detached event ring");
  return s;
}

/* Lua results for a status other than SHM_OK: `fail, "timeout"` (or
 * "interrupted"), where fail is nil or false; raises for a corrupted ring;
 * `nil, message, errno` for a failed system call. */
static int failure(lua_State *L, int st, const char *why, int nilfirst) {
  int en = errno;
  switch (st) {
  case SHM_CORRUPT:
    return luaL_error(L, "shm.events: corrupted events (%s)", why);
  case SHM_ERRNO:
    return shm_fail(L, en, "shm.events");
  default:
    if (nilfirst) lua_pushnil(L);
    else lua_pushboolean(L, 0);
    lua_pushstring(L, st == SHM_INTERRUPTED ? "interrupted" : "timeout");
    return 2;
  }
}

/***
A ring of events in a segment, for any number of publisher and subscriber
processes (see `shm.events.create`).  Publishers never wait for subscribers:
when the ring is full the oldest events are overwritten.  Each subscriber
(`events:subscribe`) reads every event in order, or learns how many it missed.

The publishers' lock is robust: a publisher killed holding it leaves no partial
event visible, and the next publisher finishes or drops its work
(`stat().recovered` counts these).  A header or record whose fields are out of
range raises `shm.events: corrupted events (...)`.
@type events
*/

/***
Publish an event; never waits for subscribers (the oldest events are
overwritten when the ring is full).
@function events:publish
@tparam string msg
@tparam[opt] number timeout seconds to wait for the publishers' lock (held
only while another publisher copies its event); `nil` waits forever
@treturn boolean `true`
@treturn[2] boolean `false`
@treturn[2] string `"timeout"`
@error `nil, message, errno` (`ENOSPC`: a POSIX ring's tmpfs has no memory for it)
@raise if `msg` can never fit (more than the capacity less 16 bytes), or the
ring is corrupted
@usage ev:publish("invalidate user:42")
*/
static int l_publish(lua_State *L) {
  shm_events *e = checkevents(L, 1);
  size_t len;
  const char *msg = luaL_checklstring(L, 2, &len), *why = NULL;
  shm_deadline d;
  int st;
  if (e->seg->readonly) luaL_error(L, "attempt to publish to a read-only event ring");
  shm_optdeadline(L, 3, &d);
  st = ev_publish(&e->core, msg, len, &d, shm_ctx_self(e->ctx), &why);
  if (st == SHM_OK) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (st == EV_TOOBIG)
    return luaL_error(L, "event of %I bytes can never fit in an event ring of capacity %I",
                      (lua_Integer)len, (lua_Integer)e->core.cap);
  if (st == SHM_ERRNO) {
    int en = errno;
    return shm_fail(L, en, "ev:publish(%s)", shm_inseg_objname(L, 1));
  }
  return failure(L, st, why, 0);
}

/***
A subscriber: a cursor private to this process (copies made by `fork` go on
independently).
@function events:subscribe
@tparam[opt] string from `"next"` (default: the next event published) or
`"oldest"` (the oldest event the ring still holds)
@treturn subscriber
@usage local sub = ev:subscribe()
*/
static int l_subscribe(lua_State *L) {
  static const char *const froms[] = {"next", "oldest", NULL};
  shm_events *e = checkevents(L, 1);
  int oldest = luaL_checkoption(L, 2, "next", froms);
  const char *why = NULL;
  evcursor c;
  shm_subscriber *s;
  if (ev_cursor(&e->core, &c, oldest, &why) != SHM_OK) return failure(L, SHM_CORRUPT, why, 1);
  s = (shm_subscriber *)lua_newuserdatauv(L, sizeof *s, 1);
  s->ev = e;
  s->cur = c;
  s->buf.p = NULL;
  s->buf.size = 0;
  s->lent = 0;
  luaL_setmetatable(L, SUB_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  return 1;
}

/***
Figures, read without a lock: `capacity`, `published` (events published,
ever), `oldest` and `newest` (the sequence numbers of the oldest event kept
and of the newest; `oldest` is `newest + 1` when none is kept), `recovered`
(locks taken over from a publisher that died holding them).
@function events:stat
@treturn table
@usage local s = ev:stat(); print(s.newest - s.oldest + 1, "events kept")
*/
static int l_stat(lua_State *L) {
  shm_events *e = checkevents(L, 1);
  const char *why = NULL;
  evstat s;
  if (ev_stat(&e->core, &s, &why) != SHM_OK) return failure(L, SHM_CORRUPT, why, 1);
  lua_createtable(L, 0, 5);
  shm_setfield_int(L, "capacity", (lua_Integer)s.capacity);
  shm_setfield_int(L, "published", (lua_Integer)s.published);
  shm_setfield_int(L, "oldest", (lua_Integer)s.oldest);
  shm_setfield_int(L, "newest", (lua_Integer)s.newest);
  shm_setfield_int(L, "recovered", (lua_Integer)s.recovered);
  return 1;
}

/***
Remove the ring's segment from the system (as `segment:remove`).
@function events:remove
@usage ev:remove()
*/

/***
Detach the ring's segment (as `segment:detach`); `<close>` does this too (Lua
5.4).  Its subscribers can no longer be used.
@function events:detach
@usage ev:detach()
*/
static int l_remove(lua_State *L) { return shm_inseg_call(L, EVENTS_MT, "remove"); }
static int l_detach(lua_State *L) { return shm_inseg_call(L, EVENTS_MT, "detach"); }

/***
The segment the ring lives in.
@function events:segment
@treturn segment
@usage print(ev:segment():stat().nattch)
*/
static int l_segment(lua_State *L) { return shm_inseg_segment(L, EVENTS_MT); }

static int l_tostring(lua_State *L) { return shm_inseg_tostring(L, EVENTS_MT); }

/***
A subscriber of an event ring (`events:subscribe`): a cursor in this process.
@type subscriber
*/

/***
The next event.  Waits for one if there is none yet; a subscriber that fell
more than the ring behind gets `nil, "lost", n` once (it missed `n` events)
and then goes on from the oldest event kept.  An event is never torn: a copy
that a publisher overwrote meanwhile is dropped (and counted as lost).
@function subscriber:next
@tparam[opt] number timeout seconds; `0` only looks, `nil` waits forever
@treturn string the event
@treturn integer its sequence number (1 for the first event ever published)
@treturn[2] nil
@treturn[2] string `"timeout"` or `"interrupted"`
@treturn[3] nil
@treturn[3] string `"lost"`
@treturn[3] integer how many events it missed
@raise if the ring is corrupted
@usage while true do
  local msg, seq = sub:next()
  if msg then handle(msg) elseif seq == "lost" then cache = {} end
end
*/
static int l_next(lua_State *L) {
  shm_subscriber *s = checksub(L, 1);
  evwait wt = {shm_opttimeout(L, 2), 0, {0, {0, 0}}};
  const char *why = NULL;
  size_t len = 0;
  uint64_t seq = 0, lost = 0;
  shm_buf own = {NULL, 0};
  /* copied and confirmed before any Lua allocation: a finalizer run by one
   * could detach the ring or call next on this subscriber (while an FFI next
   * holds the staging buffer, into a buffer of its own) */
  int st = ev_next(&s->ev->core, &s->cur, s->lent ? &own : &s->buf, &len, &seq, &lost, &wt, &why);
  if (st == SHM_OK) {
    shm_pushbuf(L, &s->buf, s->lent, &own, len); /* (a finalizer may call next) */
    lua_pushinteger(L, (lua_Integer)seq);
    return 2;
  }
  shm_buf_free(&own);
  if (st == EV_LOST) {
    lua_pushnil(L);
    lua_pushliteral(L, "lost");
    lua_pushinteger(L, (lua_Integer)lost);
    return 3;
  }
  return failure(L, st, why, 1);
}

static int l_subgc(lua_State *L) {
  shm_subscriber *s = (shm_subscriber *)shm_checkclass(L, 1, SUB_MT);
  shm_buf_free(&s->buf);
  return 0;
}

/* tostring(sub): "shm.subscriber(shm.events(...))" */
static int l_subtostring(lua_State *L) {
  shm_checkclass(L, 1, SUB_MT);
  lua_getiuservalue(L, 1, 1);
  lua_pushfstring(L, "%s(%s)", SUB_MT, luaL_tolstring(L, -1, NULL));
  return 1;
}

/* ---- constructors ---- */

/* Wrap the segment at idx (attached, from this module) as an event ring; cap
 * 0: open only.  Pushes it, or nil, message, errno. */
static int newevents(lua_State *L, int idx, int keyidx, uint64_t cap, const char *fname, int created) {
  shm_segment *s = shm_checkopen(L, idx);
  shm_ctx *ctx = shm_getctx(L);
  const char *why = NULL;
  evcore core;
  shm_status st = ev_attach(&core, s->addr, s->size, cap, shm_ctx_self(ctx), &why);
  shm_events *e;
  if (st == SHM_TIMEOUT)
    return shm_inseg_refuse(L, idx, keyidx, created, fname,
                            "still being initialised by another process (timeout)", ETIMEDOUT);
  if (st != SHM_OK) return shm_inseg_refuse(L, idx, keyidx, created, fname, why, EINVAL);
  e = (shm_events *)lua_newuserdatauv(L, sizeof *e, 1);
  core.seg = s;
  e->core = core;
  e->seg = s;
  e->ctx = ctx;
  luaL_setmetatable(L, EVENTS_MT);
  lua_pushvalue(L, idx);
  lua_setiuservalue(L, -2, 1);
  return 1;
}

/***
Make an event ring: broadcast from any number of publisher processes to any
number of subscriber processes, in one new segment.
@function events.create
@tparam integer|string key_or_name as for `create`
@tparam integer capacity bytes for events (each takes 16 bytes more, and is
padded to 8), 32 to 2^32-1
@tparam[opt="0600"] integer|string mode
@treturn events
@error `nil, message, errno` (`EEXIST` if the segment exists)
@usage local ev = assert(shm.events.create("/invalidate", 1024 * 1024))
*/
static int l_create(lua_State *L) {
  uint64_t cap = shm_checkcapacity(L, 2, EV_MINCAP, EV_MAXCAP);
  /* the ring's memory: as it is used */
  if (shm_inseg_make(L, 1, (lua_Integer)(EV_HDRSIZE + cap), EV_HDRSIZE, "shm.events.create")) return 3;
  return newevents(L, 4, 1, cap, "shm.events.create", 1);
}

/***
Attach an existing event ring (its header is validated first); with
`capacity`, a missing one is created, atomically: processes racing to
create-or-open one ring all end up on the same ring.  An opener that finds it
being initialised by another process waits for it (up to 5 s; a dead
initialiser is taken over).  An existing ring keeps its own capacity.
@function events.open
@tparam integer|string key_or_name
@tparam[opt] integer capacity create it with this capacity if it is missing
@tparam[opt="0600"] integer|string mode for a ring this call creates
@treturn events
@error `nil, message, errno` (`ENOENT`; `EINVAL`: not a valid event ring)
@usage local ev = assert(shm.events.open("/invalidate", 1024 * 1024)) -- create or open
*/
static int l_open(lua_State *L) {
  uint64_t cap = lua_isnoneornil(L, 2) ? 0 : shm_checkcapacity(L, 2, EV_MINCAP, EV_MAXCAP);
  if (shm_inseg_make(L, 0, cap != 0 ? (lua_Integer)(EV_HDRSIZE + cap) : 0, EV_HDRSIZE, "shm.events.open"))
    return 3;
  return newevents(L, 4, 1, cap, "shm.events.open", 0);
}

static const luaL_Reg events_methods[] = {
  {"publish", l_publish}, {"subscribe", l_subscribe}, {"stat", l_stat},
  {"remove", l_remove},   {"detach", l_detach},       {"segment", l_segment},
  {NULL, NULL}};

static const luaL_Reg events_meta[] = {
  SHM_CLOSE_ENTRY(l_detach) {"__tostring", l_tostring}, {NULL, NULL}};

static const luaL_Reg sub_methods[] = {{"next", l_next}, {NULL, NULL}};

static const luaL_Reg sub_meta[] = {{"__gc", l_subgc}, {"__tostring", l_subtostring}, {NULL, NULL}};

/***
Where the ring's fields are, in bytes from the start of its segment: for
tools and tests that look at the raw memory (`header` is the header's size,
the ring follows it).  Fields: `header`, `magic`, `capacity`, `lock` (the
publishers' lock word), `newest`, `tail`, `oldest`, `old` (the packed words),
`record` (the size of a record's header).
@table events.layout
*/
static void pushlayout(lua_State *L) {
  lua_createtable(L, 0, 9);
  shm_setfield_int(L, "header", EV_HDRSIZE);
  shm_setfield_int(L, "magic", (lua_Integer)offsetof(evhdr, magic));
  shm_setfield_int(L, "capacity", (lua_Integer)offsetof(evhdr, capacity));
  shm_setfield_int(L, "lock", (lua_Integer)offsetof(evhdr, lock));
  shm_setfield_int(L, "newest", (lua_Integer)offsetof(evhdr, newest));
  shm_setfield_int(L, "tail", (lua_Integer)offsetof(evhdr, tailw));
  shm_setfield_int(L, "oldest", (lua_Integer)offsetof(evhdr, oldest));
  shm_setfield_int(L, "old", (lua_Integer)offsetof(evhdr, oldw));
  shm_setfield_int(L, "record", EV_RECHDR);
}

/* ---- FFI entry points (lua/shm/ffi.lua under LuaJIT) ----
 * publish and next as plain C functions, reached through a table of function
 * pointers (shm.events._ffi, a light userdata).  `ud` is the userdata of an
 * event ring or of a subscriber (the caller checked its class).  A timeout
 * < 0 means none (wait forever).  They return an shm_status (or EV_TOOBIG,
 * EV_LOST), or SHM_FFI_FALLBACK having done nothing, for a call l_publish or
 * l_next must answer (detached, read-only, out of memory). */

static int ffi_publish(void *ud, const char *msg, size_t len, double timeout, const char **why) {
  shm_events *e = (shm_events *)ud;
  shm_deadline d;
  int st;
  if (e->seg->addr == NULL || e->seg->readonly) return SHM_FFI_FALLBACK;
  if (timeout < 0) d.forever = 1;
  else shm_deadline_after(&d, timeout);
  *why = NULL;
  st = ev_publish(&e->core, msg, len, &d, shm_ctx_self(e->ctx), why);
  return st == SHM_ERRNO ? SHM_FFI_FALLBACK : st; /* nothing published: l_publish says why */
}

/* The event's bytes in *p (the subscriber's staging buffer: a string made
 * straight from the ring could outlive a detach made by a finalizer run
 * while the pointer is boxed); its length and sequence number (or the count
 * lost) in num[0] and num[1], numbers the caller reads before it makes any
 * cdata or string. */
static int ffi_next(void *ud, double timeout, const char **p, double *num, const char **why) {
  shm_subscriber *s = (shm_subscriber *)ud;
  evwait wt = {timeout, 0, {0, {0, 0}}};
  uint64_t n = 0, lost = 0;
  size_t len = 0;
  int st;
  if (s->ev->seg->addr == NULL || s->lent) return SHM_FFI_FALLBACK;
  *why = NULL;
  st = ev_next(&s->ev->core, &s->cur, &s->buf, &len, &n, &lost, &wt, why);
  if (st == SHM_ERRNO) return SHM_FFI_FALLBACK; /* nothing taken: l_next says why */
  *p = s->buf.p;
  num[0] = (double)len;
  num[1] = (double)(st == EV_LOST ? lost : n);
  s->lent = st == SHM_OK; /* (until done: a finalizer's next takes the C API's path) */
  return st;
}

/* The caller of next made its string: the buffer is the subscriber's again. */
static void ffi_nextdone(void *ud) {
  ((shm_subscriber *)ud)->lent = 0;
}

/* Keep in step with the cdef in lua/shm/ffi.lua. */
typedef struct shm_events_ffi_api2 {
  int version;
  int lost;   /* the status next returns for "lost" (EV_LOST) */
  int toobig; /* the status publish returns for an event that can never fit */
  int (*publish)(void *, const char *, size_t, double, const char **);
  int (*next)(void *, double, const char **, double *, const char **);
  void (*done)(void *);
} shm_events_ffi_api2;

static const shm_events_ffi_api2 events_ffi = {3, EV_LOST, EV_TOOBIG, ffi_publish, ffi_next, ffi_nextdone};

void shm_open_events(lua_State *L, int module, int methods) {
  (void)methods;
  shm_newupclass(L, EVENTS_MT, events_methods, events_meta);
  shm_newupclass(L, SUB_MT, sub_methods, sub_meta);
  shm_inseg_constructors(L, l_create, l_open); /* shm.events */
  pushlayout(L);
  lua_setfield(L, -2, "layout");
  lua_pushlightuserdata(L, (void *)&events_ffi); /* for lua/shm/ffi.lua */
  lua_setfield(L, -2, "_ffi");
  lua_setfield(L, module, "events");
}
