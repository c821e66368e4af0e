/*
 * shm.dict: ngx.shared.DICT's API for any set of processes, in one segment.
 *
 * The file has two halves.  The core (dict_* and shm_dict_*) is plain C that
 * never sees a lua_State: it takes pointers and lengths and returns a status,
 * and every locked section has one unlock path (txn_end).  The binding below
 * checks arguments, encodes values, calls the core and turns its statuses
 * into Lua results.  No Lua call, no Lua allocation and no error happen while
 * the lock is held.
 *
 * Layout of the segment (offsets, never pointers: processes map it at
 * different addresses):
 *   header (dhdr)   configuration, the lock, the state guarded by the lock
 *                   (the "to free" chain among it), the wake words of
 *                   shm.lock, and the undo journal
 *   buckets         nbuckets x (u32 head of a hash chain (a block ref), u32 its
 *                   sequence word: odd while a writer changes that chain)
 *   refs            nbuckets x u8: "read since last looked at" bits
 *   heap            nunits x D_UNIT bytes, a binary buddy allocator
 * A block ref is a unit index into the heap; D_NIL is none.  A block starts
 * with a header word (magic | kind | order).  Free blocks are on one doubly
 * linked free list per order.  An entry (key and value) is one block; a list
 * value keeps its elements in blocks of their own, doubly linked.
 *
 * Writers serialise on a robust lock (lock.c), waiting for it no longer than
 * the handle's timeout.  Every write to a word that is reachable in the
 * committed state goes through the undo journal: the old value is appended
 * before the word changes.  A process killed at any instruction leaves a
 * journal that the next locker (who gets SHM_OWNERDIED) rolls back: only the
 * key being changed is affected, and it keeps its old value.  New data is
 * written into freshly allocated blocks, which are linked (journalled) only
 * once complete; a block freed in a transaction is never refilled in it.
 * No call is limited by the journal: an operation that touches many blocks
 * commits in steps, each consistent on its own (an eviction, a second
 * chance, an expired item freed); a list's elements, however many, are set
 * aside on the "to free" chain in one step and freed in committed batches
 * once the operation is done (by the next locker, if this process dies).
 *
 * Readers (get, get_stale, ttl, llen) take no lock.  Each hash chain has a
 * sequence word, odd while a writer changes that chain (or an entry on it):
 * a reader reads it, looks the key up and copies the value out, and keeps
 * the copy only if the word did not change.  A writer changing other chains,
 * even one stopped or killed inside its change, never makes a reader wait.
 * Every ref, length and chain a reader follows is validated and bounded, so a
 * read racing with a writer (or a hostile segment) is memory-safe; after
 * D_SPINS failed tries a reader takes the lock (with the timeout).  Reads
 * refresh LRU order through the refs bits (a reader sets its bucket's bit;
 * eviction gives an entry whose bit is set a second chance), so readers write
 * nothing but that byte, and only when it is clear.
 *
 * Everything read from the segment is untrusted: the configuration is
 * validated once at attach and kept in the process-local handle; every ref
 * is checked against the heap and the block header before use; every walk
 * is bounded by the number of units and checked for cycles (Brent).  Corruption is SHM_CORRUPT with a
 * reason, never an access outside the mapping.
 */
/***
@module shm
*/
#include "shm.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DICT_MT "shm.dict"
#define D_MAGIC 0x314349444d48534cULL /* "LSHMDIC1" */
#define D_VERSION 2u
#define D_UNIT 32u                    /* bytes per heap unit */
#define D_UNITSHIFT 5
#define D_MAXORDER 31u
#define D_JMAX 1024u                  /* undo journal entries (one step of any operation fits) */
#define D_JSTEP (D_JMAX - 256u)       /* a long operation commits before the journal passes this */
#define D_MAXOPEN 8u                  /* buckets one transaction changes at most */
#define D_NIL 0xffffffffu
#define D_SPINS 64                    /* optimistic tries before a reader locks */
#define D_MAXKEY 65535u
#define D_EXPIRE_ON_STORE 2           /* expired items freed from the LRU tail per store */
#define D_SECONDCHANCE 64             /* read items moved to the head at most per eviction */
#define D_TIMEOUT 10.0                /* default seconds a call waits for the writers' lock */
#define D_CACHELINE 64
#define D_NWAKE 64                    /* wake words (futexes) for shm.lock waiters, by key hash */
#define D_PAD 64 /* bytes after the heap: a block header read at the last unit stays inside */
#define D_MINCAP (16u * 1024u)
#define D_INPLACE 256u               /* a value of the same length up to this is overwritten in place */
#define A8(n) (((size_t)(n) + 7) & ~(size_t)7)
#define A4(n) (((size_t)(n) + 3) & ~(size_t)3)

/* block header word: magic (16 bits) | kind (8) | order (8) */
#define B_MAGIC 0x4c440000u
#define B_FREE 1u
#define B_ENTRY 2u
#define B_NODE 3u
#define BHDR(kind, order) (B_MAGIC | ((kind) << 8) | (order))
#define BKIND(w) (((w) >> 8) & 0xffu)
#define BORDER(w) ((w) & 0xffu)

/* ---- the shared layout ---- */

typedef struct djentry {
  uint32_t word; /* byte offset / 4 of the journalled word */
  uint32_t old;
} djentry;

typedef struct dhdr {
  /* configuration: written once, validated at attach, never trusted after */
  _Alignas(D_CACHELINE) uint64_t magic;
  uint32_t version;
  uint32_t hdrsize;
  uint64_t size;        /* bytes of the segment the dict uses */
  uint64_t bucket_off;  /* = hdrsize */
  uint64_t refs_off;    /* = bucket_off + 8 * nbuckets */
  uint64_t heap_off;    /* refs_off + nbuckets, rounded up to a cache line */
  uint32_t nbuckets;    /* a power of two */
  uint32_t nunits;      /* heap size in units */
  uint32_t maxorder;    /* largest block order in the heap */
  uint32_t seed;        /* hash seed */
  /* the writers' lock (its own line) */
  _Alignas(D_CACHELINE) shm_lock lock;
  /* state guarded by the lock; every word is journalled */
  _Alignas(D_CACHELINE) uint32_t flush_gen; /* entries stored under another generation are expired */
  uint32_t count;       /* entries in the table, expired or not */
  uint32_t free_units;
  uint32_t lru_head;    /* most recently used */
  uint32_t lru_tail;
  uint32_t freelist[D_MAXORDER + 1];
  uint32_t gc_head;     /* list elements to free: a chain through their next words */
  uint32_t pad0;
  uint64_t evicted;     /* statistics (journalled as two halves) */
  uint64_t expired;
  uint64_t recovered;
  /* wake words: 64-bit counters that shm.lock waiters sleep on (seg:wait),
   * bumped and notified by whoever releases a lock of a key hashing there;
   * plain data to the dict (never read by it) */
  _Alignas(D_CACHELINE) uint64_t wake[D_NWAKE];
  /* the undo journal */
  _Alignas(D_CACHELINE) uint32_t jn;
  uint32_t pad1;
  djentry journal[D_JMAX];
} dhdr;

/* An entry: one block.  The key follows the header, then the value at the
 * next multiple of 8 (numbers and list heads are aligned words). */
typedef struct dentry {
  uint32_t bhdr;     /* BHDR(B_ENTRY, order) */
  uint32_t hash;
  uint32_t next;     /* hash chain */
  uint32_t lru_prev;
  uint32_t lru_next;
  uint32_t flags;    /* the user's flags */
  uint32_t vlen;     /* value bytes; a list: its length */
  uint32_t gen;      /* flush generation when stored */
  uint64_t expires;  /* ms since the epoch (CLOCK_REALTIME), 0 = never */
  uint32_t meta;     /* key length (low 16 bits) | value type << 16 */
  uint32_t pad;
} dentry;

/* A list element: one block, the value follows. */
typedef struct dnode {
  uint32_t bhdr;     /* BHDR(B_NODE, order) */
  uint32_t next;     /* towards the tail */
  uint32_t prev;
  uint32_t meta;     /* value type */
  uint32_t vlen;
  uint32_t pad;
} dnode;

/* a list entry's value: its element blocks */
typedef struct dlist {
  uint32_t head;
  uint32_t tail;
} dlist;

_Static_assert(sizeof(dentry) == 48, "entry header");
_Static_assert(sizeof(dnode) == 24, "node header");
_Static_assert(sizeof(dhdr) % D_CACHELINE == 0, "header");

#define HDRSIZE ((uint32_t)sizeof(dhdr))
/* the head of hash's chain, and the sequence word readers of it follow */
#define BHEAD(d, hash) (&(d)->buckets[2 * (size_t)((hash) & (d)->mask)])
#define BSEQ(d, hash) (&(d)->buckets[2 * (size_t)((hash) & (d)->mask) + 1])
#define MKMETA(klen, type) ((uint32_t)(klen) | ((uint32_t)(type) << 16))
#define MKLEN(meta) ((meta) & 0xffffu)
#define MTYPE(meta) ((meta) >> 16)

/* value types (also what the binding encodes) */
enum { DV_NIL = 0, DV_BOOL = 1, DV_NUM = 2, DV_INT = 3, DV_STR = 4, DV_TABLE = 5, DV_LIST = 6 };

/* statuses beyond the common ones */
enum {
  SHM_DICT_NOTFOUND = SHM_NSTATUS,
  SHM_DICT_EXISTS,
  SHM_DICT_NOMEM,
  SHM_DICT_NOTNUM,
  SHM_DICT_NOTLIST,
  SHM_DICT_ISLIST,
  SHM_DICT_BUFSMALL, /* the caller's buffer is too small: *need says how much */
  SHM_DICT_CHANGED   /* cas: the value is not the one expected */
};

/* ---- the process-local handle (kept in the Lua userdata) ---- */

typedef struct shm_dict {
  unsigned char *base; /* the mapping; NULL once detached */
  size_t size;
  shm_ctx *ctx;        /* who we are, for the lock */
  shm_segment *seg;    /* where heap memory is reserved as the allocator reaches it */
  /* validated configuration: copies, never re-read from shared memory */
  dhdr *h;
  uint32_t *buckets;   /* pairs: a chain's head, then its sequence word */
  unsigned char *refs;
  unsigned char *heap;
  uint32_t nbuckets, mask, nunits, maxorder, seed;
  size_t heapbytes;    /* nunits * D_UNIT; a D_PAD guard follows in the segment */
  uint32_t scratch[16]; /* where a ref out of the heap points (never the segment) */
  double timeout;      /* seconds a call waits for the lock (< 0: forever) */
  /* a transaction (valid while the lock is held) */
  uint32_t jn;
  uint32_t nopen;      /* buckets whose sequence word this transaction made odd */
  uint32_t open[D_MAXOPEN];
  int overflow;        /* the journal overflowed: roll back */
  const char *why;     /* reason for SHM_CORRUPT */
  shm_buf buf;         /* values and keys copied out (grown outside the lock) */
} shm_dict;

/* a value going in or out of the core */
typedef struct dval {
  int type;
  uint32_t flags;
  const char *ptr;     /* in: the bytes; out: in the caller's buffer */
  size_t len;
  int stale;           /* out: expired (get_stale) */
} dval;

#define LOAD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define LOADACQ(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/* seeded FNV-1a, then a final mix */
static uint32_t dict_hash(uint32_t seed, const char *k, size_t n) {
  uint32_t h = 2166136261u ^ seed;
  size_t i;
  for (i = 0; i < n; i++) h = (h ^ (unsigned char)k[i]) * 16777619u;
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  return h;
}

/* ---- layout arithmetic and validation ---- */

static uint32_t floorlog2(uint64_t v) {
  uint32_t r = 0;
  while (v > 1) {
    v >>= 1;
    r++;
  }
  return r;
}

typedef struct dgeom {
  uint32_t nbuckets, nunits, maxorder;
  uint64_t refs_off, heap_off;
} dgeom;

/* The layout for `size` bytes; 0 if it does not fit. */
static int geometry(uint64_t size, dgeom *g) {
  uint64_t nb = 16, rest;
  if (size < D_MINCAP || size > ((uint64_t)1 << 34)) return 0;
  while (nb < (1u << 24) && nb * 128 < size) nb <<= 1;
  g->nbuckets = (uint32_t)nb;
  g->refs_off = HDRSIZE + 8 * nb;
  g->heap_off = (g->refs_off + nb + D_CACHELINE - 1) & ~(uint64_t)(D_CACHELINE - 1);
  if (g->heap_off + D_PAD >= size) return 0;
  rest = (size - g->heap_off - D_PAD) >> D_UNITSHIFT;
  if (rest < 2 || rest > 0xfffffff0u) return 0;
  g->nunits = (uint32_t)rest;
  g->maxorder = floorlog2(rest);
  return 1;
}

/* Validate the configuration and fill the handle; NULL or why not a dict. */
static const char *dict_attach(shm_dict *d, unsigned char *base, size_t size) {
  dhdr *h = (dhdr *)(void *)base;
  dgeom g;
  if (size < sizeof(dhdr)) return "segment too small for a dict";
  if (LOADACQ(&h->magic) != D_MAGIC) return "not a dict (bad magic)";
  if (h->version != D_VERSION) return "unsupported dict version";
  if (h->hdrsize != HDRSIZE || h->bucket_off != HDRSIZE) return "bad header size";
  if (h->size > size || !geometry(h->size, &g)) return "size does not match the segment";
  if (h->nbuckets != g.nbuckets || h->refs_off != g.refs_off || h->heap_off != g.heap_off ||
      h->nunits != g.nunits || h->maxorder != g.maxorder)
    return "bad geometry";
  d->base = base;
  d->size = size;
  d->h = h;
  d->buckets = (uint32_t *)(void *)(base + HDRSIZE);
  d->refs = base + g.refs_off;
  d->heap = base + g.heap_off;
  d->nbuckets = g.nbuckets;
  d->mask = g.nbuckets - 1;
  d->nunits = g.nunits;
  d->maxorder = g.maxorder;
  d->seed = h->seed;
  d->heapbytes = (size_t)g.nunits << D_UNITSHIFT;
  return NULL;
}

/* Lay out a new dict in zeroed memory (the caller holds the lock, which
 * stays as it is); the magic is published last. */
static void dict_format(unsigned char *base, size_t size, uint32_t seed) {
  dhdr *h = (dhdr *)(void *)base;
  dgeom g;
  uint32_t at, o;
  unsigned char *heap;
  geometry(size, &g);
  h->version = D_VERSION;
  h->hdrsize = HDRSIZE;
  h->size = size;
  h->bucket_off = HDRSIZE;
  h->refs_off = g.refs_off;
  h->heap_off = g.heap_off;
  h->nbuckets = g.nbuckets;
  h->nunits = g.nunits;
  h->maxorder = g.maxorder;
  h->seed = seed;
  h->flush_gen = 0;
  h->count = 0;
  h->gc_head = D_NIL;
  h->lru_head = h->lru_tail = D_NIL;
  h->evicted = h->expired = h->recovered = 0;
  h->jn = 0;
  for (at = 0; at < g.nbuckets; at++) { /* every bucket D_NIL, its sequence 0 */
    uint32_t *b = (uint32_t *)(void *)(base + HDRSIZE) + 2 * (size_t)at;
    b[0] = D_NIL;
    b[1] = 0;
  }
  memset(base + g.refs_off, 0, g.nbuckets);
  for (o = 0; o <= D_MAXORDER; o++) h->freelist[o] = D_NIL;
  /* carve the heap into maximal aligned blocks, largest first */
  heap = base + g.heap_off;
  h->free_units = g.nunits;
  for (at = 0, o = g.maxorder + 1; o-- > 0;) {
    if (g.nunits - at >= (1u << o)) {
      uint32_t *w = (uint32_t *)(void *)(heap + ((size_t)at << D_UNITSHIFT));
      w[0] = BHDR(B_FREE, o);
      w[1] = D_NIL;
      w[2] = D_NIL;
      h->freelist[o] = at;
      at += 1u << o;
    }
  }
  __atomic_store_n(&h->magic, D_MAGIC, __ATOMIC_RELEASE);
}

/* ---- refs into the heap, validated ---- */

/* A block's words.  A ref outside the heap (scribbled after it was
 * checked) points at the handle's scratch words instead: every header read
 * or write stays inside memory we own, and jw refuses to journal it. */
static uint32_t *blockw(shm_dict *d, uint32_t ref) {
  if (ref >= d->nunits) return d->scratch;
  return (uint32_t *)(void *)(d->heap + ((size_t)ref << D_UNITSHIFT));
}

/* The size in bytes of the block of `kind` at ref, read once from its header
 * and checked to lie whole, aligned, inside the heap; 0 if it is not one. */
static size_t blockbytes(shm_dict *d, uint32_t ref, uint32_t kind) {
  uint32_t w, o;
  if (ref >= d->nunits) return 0;
  w = LOAD(blockw(d, ref));
  o = BORDER(w);
  if ((w & 0xffff0000u) != B_MAGIC || BKIND(w) != kind || o > d->maxorder) return 0;
  if ((ref & ((1u << o) - 1)) != 0 || (uint64_t)ref + (1u << o) > d->nunits) return 0;
  return (size_t)D_UNIT << o;
}

/* A block of `kind` and `order` at ref, whole inside the heap. */
static int blockok(shm_dict *d, uint32_t ref, uint32_t kind, uint32_t order) {
  return blockbytes(d, ref, kind) == ((size_t)D_UNIT << order);
}

static dentry *entryof(shm_dict *d, uint32_t ref) { return (dentry *)(void *)blockw(d, ref); }
static dnode *nodeof(shm_dict *d, uint32_t ref) { return (dnode *)(void *)blockw(d, ref); }

/* An entry as read once: every length it uses was read a single time and
 * checked against its block, which was checked against the heap; the key
 * and value pointers come from those reads only (a writer that changes the
 * entry meanwhile can make the copy stale, never make it leave the block). */
typedef struct dview {
  dentry *e;
  uint32_t klen, type, vlen, flags;
  const char *key;
  unsigned char *val;
} dview;

static int viewof(shm_dict *d, uint32_t ref, dview *v) {
  uint32_t meta;
  size_t bytes = blockbytes(d, ref, B_ENTRY), voff;
  if (bytes == 0) return 0;
  v->e = (dentry *)(void *)blockw(d, ref);
  meta = LOAD(&v->e->meta);
  v->klen = MKLEN(meta);
  v->type = MTYPE(meta);
  v->vlen = v->type == DV_LIST ? (uint32_t)sizeof(dlist) : LOAD(&v->e->vlen);
  if (v->klen == 0 || v->type < DV_BOOL || v->type > DV_LIST) return 0;
  voff = sizeof(dentry) + A8(v->klen);
  if (voff + A4((uint64_t)v->vlen) > bytes) return 0;
  v->key = (const char *)v->e + sizeof(dentry);
  v->val = (unsigned char *)v->e + voff;
  v->flags = LOAD(&v->e->flags);
  return 1;
}

static int entryok(shm_dict *d, uint32_t ref) {
  dview v;
  return viewof(d, ref, &v);
}

/* A list element, read once as an entry is (its type and length). */
static int nodeview(shm_dict *d, uint32_t ref, uint32_t *type, uint32_t *len) {
  size_t bytes = blockbytes(d, ref, B_NODE);
  dnode *n = nodeof(d, ref);
  if (bytes == 0) return 0;
  *type = LOAD(&n->meta);
  *len = LOAD(&n->vlen);
  if (*type != DV_NUM && *type != DV_STR && *type != DV_INT) return 0;
  return sizeof(dnode) + (uint64_t)*len <= bytes;
}

static int nodeok(shm_dict *d, uint32_t ref) {
  uint32_t t, l;
  return nodeview(d, ref, &t, &l);
}

/* A walk along links read from the segment, bounded twice: by `limit` steps
 * (no honest chain is longer), and by Brent's cycle detection, which notices a
 * loop within about twice its length (a scribbled self-loop at the second
 * step), so that a hostile chain costs little more than an honest one. */
typedef struct dwalk {
  uint32_t saved, lam, power, steps, limit;
} dwalk;

static void walk_init(dwalk *w, uint32_t limit) {
  w->saved = D_NIL;
  w->lam = 0;
  w->power = 1;
  w->steps = 0;
  w->limit = limit;
}

/* Count a step onto ref: 0 when the walk is too long or went round. */
static int walk_ok(dwalk *w, uint32_t ref) {
  if (ref == w->saved || ++w->steps > w->limit) return 0;
  if (++w->lam == w->power) {
    w->saved = ref;
    w->power = w->power < 0x80000000u ? w->power << 1 : w->power;
    w->lam = 0;
  }
  return 1;
}

static int expired(shm_dict *d, dentry *e, uint64_t *now) {
  uint64_t x = LOAD(&e->expires);
  if (LOAD(&e->gen) != LOAD(&d->h->flush_gen)) return 1;
  if (x == 0) return 0;
  if (*now == 0) *now = now_ms();
  return x <= *now;
}

/* Find key in its chain.  *ref is the entry (D_NIL if absent) and *v its
 * view, *link the word that points at it (the bucket or the previous
 * entry's next).  Bounded by the number of units; 0 on a bad chain. */
static int lookupv(shm_dict *d, const char *k, size_t kl, uint32_t hash, uint32_t *ref,
                   uint32_t **link, dview *v) {
  uint32_t *at = BHEAD(d, hash);
  uint32_t r = LOAD(at);
  dwalk w;
  walk_init(&w, d->nunits);
  while (r != D_NIL) {
    if (!walk_ok(&w, r) || !viewof(d, r, v)) return 0;
    if (LOAD(&v->e->hash) == hash && v->klen == kl && memcmp(v->key, k, kl) == 0) break;
    at = &v->e->next;
    r = LOAD(at);
  }
  *ref = r;
  if (link != NULL) *link = at;
  return 1;
}

static int lookup(shm_dict *d, const char *k, size_t kl, uint32_t hash, uint32_t *ref,
                  uint32_t **link) {
  dview v;
  return lookupv(d, k, kl, hash, ref, link, &v);
}

/* ---- transactions: the lock, the journal, recovery ---- */

static int corrupt(shm_dict *d, const char *why) {
  d->why = why;
  return SHM_CORRUPT;
}

/* Is p (4 bytes) a word a transaction may change: the guarded state in the
 * header, or the buckets, sequence words, refs and heap after it? */
static int jword_ok(shm_dict *d, size_t off) {
  return (off >= offsetof(dhdr, flush_gen) && off + 4 <= offsetof(dhdr, wake)) ||
         (off >= HDRSIZE && off + 4 <= d->size);
}

/* A journalled write of a word reachable in the committed state. */
static void jw(shm_dict *d, uint32_t *p, uint32_t v) {
  dhdr *h = d->h;
  uint32_t n = d->jn;
  if (LOAD(p) == v) return; /* (p is in the segment or the scratch words: readable) */
  if ((unsigned char *)p < d->base || !jword_ok(d, (size_t)((unsigned char *)p - d->base))) {
    d->overflow = 1; /* a scribbled ref led here (the scratch words) */
    d->why = "bad reference";
    return;
  }
  if (n >= D_JMAX) {
    d->overflow = 1;
    d->why = "journal overflow";
    return;
  }
  h->journal[n].word = (uint32_t)(((unsigned char *)p - d->base) >> 2);
  h->journal[n].old = *p;
  d->jn = n + 1;
  __atomic_store_n(&h->jn, n + 1, __ATOMIC_RELEASE);
  STORE(p, v);
}

/* Journal a word as it is, for writes made to it without the journal (a
 * fresh block's first words were its free-list links). */
static void jsave(shm_dict *d, uint32_t *p) {
  uint32_t v = LOAD(p);
  jw(d, p, v ^ 1u); /* (a change, so that it is journalled) */
  STORE(p, v);
}

static void jw64(shm_dict *d, uint64_t *p, uint64_t v) {
  uint32_t *w = (uint32_t *)(void *)p, lo, hi;
  memcpy(&lo, &v, 4);
  memcpy(&hi, (char *)&v + 4, 4);
  jw(d, w, lo);
  jw(d, w + 1, hi);
}

/* Open bucket b for change: its sequence word goes odd (journalled: a
 * rollback makes it even again, two past what it was) before anything a
 * reader of that bucket follows changes, and even again at the commit.
 * Readers of other buckets never wait for this transaction. */
static void bopen(shm_dict *d, uint32_t b) {
  uint32_t *q = BSEQ(d, b), i;
  for (i = 0; i < d->nopen; i++)
    if (d->open[i] == (b & d->mask)) return;
  if (d->nopen >= D_MAXOPEN) {
    d->overflow = 1;
    d->why = "too many buckets in one step";
    return;
  }
  d->open[d->nopen++] = b & d->mask;
  jw(d, q, LOAD(q) | 1u); /* odd (a scribbled odd word stays so until the commit) */
  __atomic_thread_fence(__ATOMIC_RELEASE); /* odd before any change it guards */
}

/* Undo an interrupted transaction: the journal is untrusted, each entry
 * must name a word in the state, bucket, sequence, refs or heap areas.  A
 * sequence word is not put back (a reader that saw it before could not tell):
 * it goes two past its old value, even. */
static const char *rollback(shm_dict *d) {
  dhdr *h = d->h;
  uint32_t n = LOAD(&h->jn);
  size_t shi = HDRSIZE + 8 * (size_t)d->nbuckets;
  if (n > D_JMAX) return "bad journal length";
  while (n-- > 0) {
    size_t off = (size_t)h->journal[n].word << 2;
    uint32_t old = h->journal[n].old;
    if (!jword_ok(d, off)) return "bad journal entry";
    if (off >= HDRSIZE && off < shi && (off - HDRSIZE) % 8 == 4) old = (old | 1u) + 1u;
    __atomic_store_n((uint32_t *)(void *)(d->base + off), old, __ATOMIC_RELEASE);
  }
  __atomic_store_n(&h->jn, 0, __ATOMIC_RELEASE);
  d->jn = 0;
  d->nopen = 0;
  return NULL;
}

/* Make the committed state the current one: forget the journal, then let
 * the readers of the buckets it changed in. */
static void commit(shm_dict *d) {
  uint32_t i;
  if (d->jn > 0) __atomic_store_n(&d->h->jn, 0, __ATOMIC_RELEASE);
  d->jn = 0;
  for (i = 0; i < d->nopen; i++) {
    uint32_t *q = BSEQ(d, d->open[i]);
    __atomic_store_n(q, LOAD(q) + 1, __ATOMIC_RELEASE); /* even */
  }
  d->nopen = 0;
}

/* Commit one step of a long operation, unless the step went wrong: a
 * journal that overflowed (or a scribbled reference) is rolled back. */
static int step(shm_dict *d) {
  if (d->overflow) return corrupt(d, d->why != NULL ? d->why : "journal overflow");
  commit(d);
  return SHM_OK;
}

/* Is the journal past the point where a long operation commits a step? */
static int jfull(shm_dict *d) { return d->jn >= D_JSTEP || d->nopen >= D_MAXOPEN - 2; }

static int gc_drain(shm_dict *d);

/* Take the lock (waiting up to the handle's timeout), repairing what a dead
 * owner left: its transaction rolled back, its unfinished frees finished. */
static int txn_begin(shm_dict *d) {
  dhdr *h = d->h;
  shm_deadline dl;
  int r;
  shm_deadline_after(&dl, d->timeout < 0 ? 1e18 : d->timeout);
  r = shm_lock_acquire(&h->lock, shm_ctx_self(d->ctx), &dl);
  d->jn = 0;
  d->nopen = 0;
  d->overflow = 0;
  d->why = NULL;
  if (r == SHM_OWNERDIED) {
    const char *why = rollback(d);
    if (why != NULL) {
      shm_lock_release(&h->lock);
      return corrupt(d, why);
    }
    h->recovered++;
    r = SHM_OK;
  }
  if (r == SHM_OK && LOAD(&h->gc_head) != D_NIL && (r = gc_drain(d)) != SHM_OK) {
    if (d->jn > 0) rollback(d);
    shm_lock_release(&h->lock);
  }
  return r;
}

/* The one unlock path: roll back what a failed operation (or an overflowing
 * journal) changed since the last commit, or commit it and free the list
 * elements it set aside; unlock.  Returns the status to report. */
static int txn_end(shm_dict *d, int r) {
  if (d->overflow && r == SHM_OK) r = corrupt(d, d->why != NULL ? d->why : "journal overflow");
  if (r != SHM_OK) {
    /* a failed operation changes nothing (evictions were committed) */
    if (d->jn > 0) rollback(d);
    commit(d); /* (buckets opened without a journal entry: even again) */
  } else {
    commit(d);
    if (LOAD(&d->h->gc_head) != D_NIL && (r = gc_drain(d)) != SHM_OK && d->jn > 0) rollback(d);
    commit(d);
  }
  shm_lock_release(&d->h->lock);
  return r;
}

/* ---- the buddy allocator (under the lock) ---- */

static uint32_t order_for(size_t bytes) {
  uint32_t o = 0;
  while (((size_t)D_UNIT << o) < bytes && o < 63) o++;
  return o;
}

static int fl_remove(shm_dict *d, uint32_t ref, uint32_t order) {
  uint32_t *w = blockw(d, ref), next = w[1], prev = w[2];
  if (next != D_NIL && !blockok(d, next, B_FREE, order)) return 0;
  if (prev != D_NIL && !blockok(d, prev, B_FREE, order)) return 0;
  if (prev == D_NIL) {
    if (d->h->freelist[order] != ref) return 0;
    jw(d, &d->h->freelist[order], next);
  } else {
    jw(d, &blockw(d, prev)[1], next);
  }
  if (next != D_NIL) jw(d, &blockw(d, next)[2], prev);
  return 1;
}

static int fl_push(shm_dict *d, uint32_t ref, uint32_t order) {
  uint32_t head = d->h->freelist[order], *w = blockw(d, ref);
  if (head != D_NIL && !blockok(d, head, B_FREE, order)) return 0;
  jw(d, &w[0], BHDR(B_FREE, order));
  jw(d, &w[1], head);
  jw(d, &w[2], D_NIL);
  if (head != D_NIL) jw(d, &blockw(d, head)[2], ref);
  jw(d, &d->h->freelist[order], ref);
  return 1;
}

/* The offset of a heap unit in the segment. */
static size_t heapoff(const shm_dict *d, uint32_t ref) {
  return (size_t)(d->heap - d->base) + ((size_t)ref << D_UNITSHIFT);
}

/* A block of at least `bytes`: SHM_OK (*ref), SHM_DICT_NOMEM or SHM_CORRUPT. */

static int balloc(shm_dict *d, size_t bytes, uint32_t kind, uint32_t *ref) {
  uint32_t k = order_for(bytes), j, r, i;
  if (k > d->maxorder) return SHM_DICT_NOMEM;
  for (j = k; j <= d->maxorder && d->h->freelist[j] == D_NIL; j++) {
  }
  if (j > d->maxorder) return SHM_DICT_NOMEM;
  r = d->h->freelist[j];
  if (!blockok(d, r, B_FREE, j)) return corrupt(d, "bad free list");
  /* memory for the block and the headers of the buddies split off, before
   * anything is written (a full tmpfs: no memory, never SIGBUS) */
  if (shm_segment_reserve(d->seg, heapoff(d, r), (size_t)1 << (k + D_UNITSHIFT)) != 0)
    return SHM_DICT_NOMEM;
  for (i = k; i < j; i++)
    if (shm_segment_reserve(d->seg, heapoff(d, r + (1u << i)), 3 * sizeof(uint32_t)) != 0)
      return SHM_DICT_NOMEM;
  if (!fl_remove(d, r, j)) return corrupt(d, "bad free list");
  while (j > k) {
    j--;
    if (!fl_push(d, r + (1u << j), j)) return corrupt(d, "bad free list");
  }
  jw(d, blockw(d, r), BHDR(kind, k));
  /* its free-list links: the caller fills the block without the journal */
  jsave(d, &blockw(d, r)[1]);
  jsave(d, &blockw(d, r)[2]);
  jw(d, &d->h->free_units, d->h->free_units - (1u << k));
  *ref = r;
  return SHM_OK;
}

static int bfree(shm_dict *d, uint32_t ref) {
  uint32_t w = LOAD(blockw(d, ref)), k = BORDER(w), size = 1u << k;
  while (k < d->maxorder) {
    uint32_t buddy = ref ^ (1u << k), lo = ref < buddy ? ref : buddy;
    if ((uint64_t)lo + (2u << k) > d->nunits || !blockok(d, buddy, B_FREE, k)) break;
    if (!fl_remove(d, buddy, k)) return corrupt(d, "bad free list");
    ref = lo;
    k++;
  }
  if (!fl_push(d, ref, k)) return corrupt(d, "bad free list");
  jw(d, &d->h->free_units, d->h->free_units + size);
  return SHM_OK;
}

/* ---- entries (under the lock) ---- */

static void lru_unlink(shm_dict *d, uint32_t ref) {
  dentry *e = entryof(d, ref);
  uint32_t prev = e->lru_prev, next = e->lru_next;
  if (prev == D_NIL) jw(d, &d->h->lru_head, next);
  else jw(d, &entryof(d, prev)->lru_next, next);
  if (next == D_NIL) jw(d, &d->h->lru_tail, prev);
  else jw(d, &entryof(d, next)->lru_prev, prev);
}

/* (a head that is not an entry is left alone: the next walk reports it) */
static void lru_push_head(shm_dict *d, uint32_t ref) {
  dentry *e = entryof(d, ref);
  uint32_t head = d->h->lru_head;
  if (head != D_NIL && !entryok(d, head)) head = D_NIL;
  jw(d, &e->lru_prev, D_NIL);
  jw(d, &e->lru_next, head);
  if (head == D_NIL) jw(d, &d->h->lru_tail, ref);
  else jw(d, &entryof(d, head)->lru_prev, ref);
  jw(d, &d->h->lru_head, ref);
}

/* The LRU neighbours of ref must be entries (checked before relinking). */
static int lru_ok(shm_dict *d, uint32_t ref) {
  dentry *e = entryof(d, ref);
  return (e->lru_prev == D_NIL || entryok(d, e->lru_prev)) &&
         (e->lru_next == D_NIL || entryok(d, e->lru_next));
}

static void lru_touch(shm_dict *d, uint32_t ref) {
  if (d->h->lru_head == ref) return;
  lru_unlink(d, ref);
  lru_push_head(d, ref);
}

/* Set a list's element blocks aside (O(1), whatever its length): its chain
 * goes in front of the header's "to free" chain, which gc_drain frees in
 * steps once the operation has committed (or the next locker does, if this
 * process dies first). */
static int park_nodes(shm_dict *d, const dview *v) {
  dlist l;
  memcpy(&l, v->val, sizeof l);
  if (l.head == D_NIL && l.tail == D_NIL) return SHM_OK;
  if (!nodeok(d, l.head) || !nodeok(d, l.tail) || nodeof(d, l.tail)->next != D_NIL)
    return corrupt(d, "bad list");
  jw(d, &nodeof(d, l.tail)->next, d->h->gc_head);
  jw(d, &d->h->gc_head, l.head);
  return SHM_OK;
}

/* Free the blocks on the "to free" chain, committing every few: each step
 * leaves the chain's head at the first block not yet freed.  A cycle in it
 * ends at a block already freed (no longer a list element). */
static int gc_drain(shm_dict *d) {
  uint32_t ref, n = 0;
  while ((ref = d->h->gc_head) != D_NIL) {
    if (++n > d->nunits || !nodeok(d, ref)) return corrupt(d, "bad list");
    jw(d, &d->h->gc_head, nodeof(d, ref)->next);
    if (bfree(d, ref) != SHM_OK) return SHM_CORRUPT;
    if (jfull(d) && step(d) != SHM_OK) return SHM_CORRUPT;
  }
  return step(d);
}

/* Remove the entry at ref, which *link points at (a list's elements are
 * set aside for gc_drain). */
static int unlink_entry(shm_dict *d, uint32_t ref, uint32_t *link) {
  dentry *e = entryof(d, ref);
  dview v;
  if (!viewof(d, ref, &v) || !lru_ok(d, ref)) return corrupt(d, "bad LRU list");
  bopen(d, e->hash);
  if (v.type == DV_LIST && park_nodes(d, &v) != SHM_OK) return SHM_CORRUPT;
  jw(d, link, e->next);
  lru_unlink(d, ref);
  jw(d, &d->h->count, d->h->count - 1);
  return bfree(d, ref);
}

/* The word pointing at entry ref in its chain (found again by its hash). */
static uint32_t *linkto(shm_dict *d, uint32_t ref) {
  dentry *e = entryof(d, ref);
  uint32_t *at = BHEAD(d, e->hash);
  dwalk w;
  walk_init(&w, d->nunits);
  while (*at != ref) {
    if (*at == D_NIL || !walk_ok(&w, *at) || !entryok(d, *at)) return NULL;
    at = &entryof(d, *at)->next;
  }
  return at;
}

static void bump(shm_dict *d, uint64_t *stat) { jw64(d, stat, *stat + 1); }

/* Unlink the entry at ref (found again in its chain) and commit that step. */
static int drop_step(shm_dict *d, uint32_t ref, uint64_t *stat) {
  uint32_t *link;
  if ((link = linkto(d, ref)) == NULL) return corrupt(d, "bad hash chain");
  if (unlink_entry(d, ref, link) != SHM_OK) return SHM_CORRUPT;
  bump(d, stat);
  return step(d);
}

/* Free up to n expired entries from the LRU tail (ngx's expire(ctx, 1)),
 * each its own step. */
static int expire_tail(shm_dict *d, int n, uint64_t *now) {
  while (n-- > 0) {
    uint32_t ref = d->h->lru_tail;
    if (ref == D_NIL) break;
    /* (entryof is safe for any ref: a live tail, the common case, costs a look) */
    if (!expired(d, entryof(d, ref), now)) break;
    if (!entryok(d, ref)) return corrupt(d, "bad LRU list");
    if (drop_step(d, ref, &d->h->expired) != SHM_OK) return SHM_CORRUPT;
  }
  return SHM_OK;
}

/* Evict the least recently used entry (not `keep`), giving entries read
 * since they were last looked at a second chance (each move its own step).
 * SHM_OK, NOMEM (nothing to evict) or CORRUPT. */
static int evict_one(shm_dict *d, uint32_t keep) {
  int chances = D_SECONDCHANCE;
  dwalk w;
  walk_init(&w, d->nunits + D_SECONDCHANCE + 1);
  for (;;) {
    uint32_t ref = d->h->lru_tail, b;
    dentry *e;
    if (ref == D_NIL) return SHM_DICT_NOMEM;
    if (++w.steps > w.limit || !entryok(d, ref) || !lru_ok(d, ref))
      return corrupt(d, "bad LRU list");
    e = entryof(d, ref);
    b = e->hash & d->mask;
    if ((ref == keep || (chances > 0 && LOAD(&d->refs[b]))) && d->h->lru_head != ref) {
      if (ref != keep) chances--;
      STORE(&d->refs[b], 0);
      lru_touch(d, ref);
      if (step(d) != SHM_OK) return SHM_CORRUPT;
      continue;
    }
    if (ref == keep) return SHM_DICT_NOMEM;
    return drop_step(d, ref, &d->h->evicted);
  }
}

/* Allocate, evicting LRU entries when full unless `safe`: as many as it
 * takes when the block can fit at all (each eviction its own step, its list
 * elements freed before the next try); none when it never can. */
static int alloc_evicting(shm_dict *d, size_t bytes, uint32_t kind, int safe, uint32_t keep,
                          uint32_t *ref, int *forcible) {
  int r = balloc(d, bytes, kind, ref);
  uint32_t i;
  if (order_for(bytes) > d->maxorder) return r;
  for (i = 0; r == SHM_DICT_NOMEM && !safe && i <= d->nunits; i++) {
    r = evict_one(d, keep);
    if (r != SHM_OK) return r;
    if (LOAD(&d->h->gc_head) != D_NIL && gc_drain(d) != SHM_OK) return SHM_CORRUPT;
    *forcible = 1;
    r = balloc(d, bytes, kind, ref);
  }
  return r;
}

/* ---- the core operations ---- */

/* The start of every write (after txn_begin): free up to two expired items
 * from the LRU tail (as ngx does on every store), then find the key. */
static int write_begin(shm_dict *d, const char *k, size_t kl, uint32_t hash, uint64_t *now,
                       uint32_t *ref, uint32_t **link, dview *v) {
  int r = expire_tail(d, D_EXPIRE_ON_STORE, now);
  if (r != SHM_OK) return r;
  if (!lookupv(d, k, kl, hash, ref, link, v)) return corrupt(d, "bad hash chain");
  return SHM_OK;
}

enum { OP_SET = 0, OP_ADD = 1, OP_REPLACE = 2 };

/* ms from now for an exptime in seconds, as ngx: truncated, <= 0 ms = never */
static uint64_t expiry(double exptime, uint64_t *now) {
  double ms = exptime * 1000.0;
  if (!(ms >= 1.0)) return 0;
  if (*now == 0) *now = now_ms();
  if (ms > 1e15) ms = 1e15;
  return *now + (uint64_t)ms;
}

/* Link a new entry for key (hash) into its chain, replacing the entry the
 * key has (if any): its place is looked up again, since evictions may have
 * changed the chain. */
static int link_entry(shm_dict *d, uint32_t ref, const char *k, size_t kl, uint32_t hash) {
  uint32_t old, *link;
  int r;
  if (!lookup(d, k, kl, hash, &old, &link)) return corrupt(d, "bad hash chain");
  if (old != D_NIL) {
    if ((r = unlink_entry(d, old, link)) != SHM_OK) return r;
    if (!lookup(d, k, kl, hash, &old, &link)) return corrupt(d, "bad hash chain");
  }
  entryof(d, ref)->next = D_NIL; /* link is the chain's last word */
  bopen(d, hash);
  jw(d, link, ref);
  lru_push_head(d, ref);
  jw(d, &d->h->count, d->h->count + 1);
  return SHM_OK;
}

/* The bytes of the entry block for a key and a value. */
static size_t entry_bytes(size_t kl, int type, size_t vlen) {
  return sizeof(dentry) + A8(kl) + A8(type == DV_LIST ? sizeof(dlist) : vlen);
}

/* A new entry (allocated, evicting unless `safe`), filled and linked. */
static int new_entry(shm_dict *d, const char *k, size_t kl, uint32_t hash, int type,
                     const void *v, size_t vlen, uint32_t flags, uint64_t expires, int safe,
                     uint32_t keep, int *forcible) {
  uint32_t ref;
  dentry *e;
  int r = alloc_evicting(d, entry_bytes(kl, type, vlen), B_ENTRY, safe, keep, &ref, forcible);
  if (r != SHM_OK) return r;
  e = entryof(d, ref);
  e->hash = hash;
  e->next = e->lru_prev = e->lru_next = D_NIL;
  e->flags = flags;
  e->vlen = type == DV_LIST ? 0 : (uint32_t)vlen;
  e->gen = d->h->flush_gen;
  e->expires = expires;
  e->meta = MKMETA(kl, type);
  e->pad = 0;
  /* (the block holds all of it: its size came from these lengths) */
  memcpy((char *)e + sizeof(dentry), k, kl);
  if (type == DV_LIST) {
    dlist l = {D_NIL, D_NIL};
    memcpy((char *)e + sizeof(dentry) + A8(kl), &l, sizeof l);
  } else {
    memcpy((char *)e + sizeof(dentry) + A8(kl), v, vlen);
  }
  return link_entry(d, ref, k, kl, hash);
}

/* Overwrite words of a reachable entry, journalled (dst 4-aligned, n bytes
 * rounded up to words inside the block: entryok checked it). */
static void jcopy(shm_dict *d, unsigned char *dst, const void *src, size_t n) {
  size_t i;
  uint32_t w;
  for (i = 0; i + 4 <= n; i += 4) {
    memcpy(&w, (const char *)src + i, 4);
    jw(d, (uint32_t *)(void *)(dst + i), w);
  }
  if (i < n) { /* the last word: the value's bytes, then what was there */
    memcpy(&w, dst + i, 4);
    memcpy(&w, (const char *)src + i, n - i);
    jw(d, (uint32_t *)(void *)(dst + i), w);
  }
}

/* Does the entry hold exactly the expected value (and flags, when `flags`)? */
static int same_value(const dview *v, const dval *x, int flags) {
  if (flags && v->flags != x->flags) return 0;
  if ((v->type == DV_INT && x->type == DV_NUM) || (v->type == DV_NUM && x->type == DV_INT)) {
    /* numbers compare as Lua compares them: 1 == 1.0 */
    int64_t i;
    double f;
    if (v->vlen != 8 || x->len != 8) return 0;
    memcpy(&i, v->type == DV_INT ? (const void *)v->val : (const void *)x->ptr, 8);
    memcpy(&f, v->type == DV_NUM ? (const void *)v->val : (const void *)x->ptr, 8);
    return f >= -9223372036854775808.0 && f < 9223372036854775808.0 && (double)(int64_t)f == f &&
           (int64_t)f == i;
  }
  return v->type == (uint32_t)x->type && v->type != DV_LIST && v->vlen == x->len &&
         memcmp(v->val, x->ptr, x->len) == 0;
}

/* set/add/replace, and cas: with `expect` (a cas), only when the key holds
 * that value (and its flags, when `cmpflags`), or is missing when the expected
 * type is DV_NIL: else CHANGED (or NOTFOUND for a missing key). */
static int shm_dict_store(shm_dict *d, int op, int safe, const char *k, size_t kl,
                          const dval *v, double exptime, const dval *expect, int cmpflags,
                          int *forcible) {
  uint32_t hash = dict_hash(d->seed, k, kl), old, *link;
  uint64_t now = 0;
  dview ov;
  int r, live;
  *forcible = 0;
  if ((r = txn_begin(d)) != SHM_OK) return r;
  if ((r = write_begin(d, k, kl, hash, &now, &old, &link, &ov)) != SHM_OK) goto done;
  live = old != D_NIL && !expired(d, entryof(d, old), &now);
  if ((op == OP_ADD && live) || (op == OP_REPLACE && !live)) {
    r = live ? SHM_DICT_EXISTS : SHM_DICT_NOTFOUND;
    goto done;
  }
  if (expect != NULL) {
    if (expect->type == DV_NIL ? live : !live || !same_value(&ov, expect, cmpflags)) {
      r = live || expect->type == DV_NIL ? SHM_DICT_CHANGED : SHM_DICT_NOTFOUND;
      goto done;
    }
  }
  if (v->type == DV_NIL) { /* delete */
    if (old != D_NIL) r = unlink_entry(d, old, link);
    goto done;
  }
  if (old != D_NIL) {
    dentry *e = ov.e;
    if (ov.type != DV_LIST && ov.vlen == v->len && v->len <= D_INPLACE &&
        (d->h->lru_head == old || lru_ok(d, old))) {
      /* same length: in place, every word journalled (the view checked the
       * value's words lie in the block) */
      bopen(d, hash);
      jcopy(d, ov.val, v->ptr, v->len);
      jw(d, &e->meta, MKMETA(kl, v->type));
      jw(d, &e->flags, v->flags);
      jw(d, &e->gen, d->h->flush_gen);
      jw64(d, &e->expires, expiry(exptime, &now));
      lru_touch(d, old);
      goto done;
    }
  }
  /* a new entry beside the old one (which it replaces when linked) ... */
  r = new_entry(d, k, kl, hash, v->type, v->ptr, v->len, v->flags, expiry(exptime, &now), 1, old,
                forcible);
  if (r == SHM_DICT_NOMEM && old != D_NIL &&
      order_for(entry_bytes(kl, v->type, v->len)) <= BORDER(LOAD(blockw(d, old)))) {
    /* ... or, when both do not fit, in the old one's place, as ngx frees the
     * old value first (and so never evicts for a value no larger): the old
     * entry goes in a step of its own, after which its block (or a larger
     * one it merged into) is sure to hold the new one.  A process killed
     * between the steps leaves the key missing, never torn. */
    if ((r = unlink_entry(d, old, link)) != SHM_OK || (r = step(d)) != SHM_OK) goto done;
    r = new_entry(d, k, kl, hash, v->type, v->ptr, v->len, v->flags, expiry(exptime, &now), safe,
                  D_NIL, forcible);
  } else if (r == SHM_DICT_NOMEM && !safe) {
    r = new_entry(d, k, kl, hash, v->type, v->ptr, v->len, v->flags, expiry(exptime, &now), 0,
                  old, forcible);
  }
done:
  return txn_end(d, r);
}

/* Copy a value out (the caller checks the sequence word after). */
static int copyout(const dview *v, dval *out, char *buf, size_t cap) {
  out->type = (int)v->type;
  out->flags = v->flags;
  if (out->type == DV_LIST) return SHM_DICT_ISLIST;
  out->len = v->vlen;
  if (out->len > cap) return SHM_DICT_BUFSMALL;
  memcpy(buf, v->val, out->len);
  out->ptr = buf;
  return SHM_OK;
}

/* A read: looks the key up and runs `what` on the entry, first without the
 * lock (the result is kept only if no writer changed the key's bucket
 * meanwhile: its sequence word is the same, and even), after D_SPINS tries
 * under the lock (waiting for it no longer than the handle's timeout).  A
 * writer changing other buckets, even one stopped inside its change, never
 * makes a reader wait. */
typedef int (*readfn)(shm_dict *d, const dview *v, uint64_t *now, void *arg);

static int dict_read(shm_dict *d, const char *k, size_t kl, readfn what, void *arg) {
  uint32_t hash = dict_hash(d->seed, k, kl), ref, *q = BSEQ(d, hash);
  dview v;
  int tries, r;
  for (tries = 0; tries < D_SPINS; tries++) {
    uint64_t now = 0;
    uint32_t s1 = LOADACQ(q);
    if (s1 & 1) {
      cpu_relax();
      continue;
    }
    if (!lookupv(d, k, kl, hash, &ref, NULL, &v)) r = -1;
    else r = ref == D_NIL ? SHM_DICT_NOTFOUND : what(d, &v, &now, arg);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (LOAD(q) != s1) continue;
    if (r == -1) return corrupt(d, "bad hash chain");
    if (ref != D_NIL) { /* recency for the evictor: the bucket's bit */
      unsigned char *bit = &d->refs[hash & d->mask];
      if (LOAD(bit) == 0) STORE(bit, 1);
    }
    return r;
  }
  /* a writer is changing this bucket (or its word is hostile): take the lock */
  if ((r = txn_begin(d)) != SHM_OK) return r;
  {
    uint64_t now = 0;
    if (!lookupv(d, k, kl, hash, &ref, NULL, &v)) r = corrupt(d, "bad hash chain");
    else r = ref == D_NIL ? SHM_DICT_NOTFOUND : what(d, &v, &now, arg);
  }
  return txn_end(d, r);
}

typedef struct getarg {
  dval *out;
  char *buf;
  size_t cap;
  int stale;
} getarg;

static int read_get(shm_dict *d, const dview *v, uint64_t *now, void *arg) {
  getarg *a = (getarg *)arg;
  int x = expired(d, v->e, now);
  if (x && !a->stale) return SHM_DICT_NOTFOUND;
  a->out->stale = x;
  return copyout(v, a->out, a->buf, a->cap);
}

/* get / get_stale: SHM_OK (out), NOTFOUND, ISLIST, BUFSMALL (out->len), CORRUPT */
static int shm_dict_get(shm_dict *d, const char *k, size_t kl, int stale, dval *out, char *buf,
                        size_t cap) {
  getarg a;
  a.out = out;
  a.buf = buf;
  a.cap = cap;
  a.stale = stale;
  return dict_read(d, k, kl, read_get, &a);
}

/* ttl of an entry that is there, expired or not (expired: negative, as ngx) */
static int read_ttl(shm_dict *d, const dview *v, uint64_t *now, void *arg) {
  uint64_t x = LOAD(&v->e->expires);
  if (LOAD(&v->e->gen) != LOAD(&d->h->flush_gen)) x = 1; /* flushed */
  if (x == 0) {
    *(double *)arg = 0;
  } else {
    if (*now == 0) *now = now_ms();
    *(double *)arg = ((double)x - (double)*now) / 1000.0;
  }
  return SHM_OK;
}

static int shm_dict_ttl(shm_dict *d, const char *k, size_t kl, double *ttl) {
  return dict_read(d, k, kl, read_ttl, ttl);
}

static int read_llen(shm_dict *d, const dview *v, uint64_t *now, void *arg) {
  if (expired(d, v->e, now)) return SHM_DICT_NOTFOUND;
  if (v->type != DV_LIST) return SHM_DICT_NOTLIST;
  *(uint32_t *)arg = LOAD(&v->e->vlen);
  return SHM_OK;
}

static int shm_dict_llen(shm_dict *d, const char *k, size_t kl, uint32_t *n) {
  int r = dict_read(d, k, kl, read_llen, n);
  if (r == SHM_DICT_NOTFOUND) {
    *n = 0;
    r = SHM_OK;
  }
  return r;
}

/* expire: any entry that is there (an expired one comes back, as ngx) */
static int shm_dict_expire(shm_dict *d, const char *k, size_t kl, double exptime) {
  uint32_t hash = dict_hash(d->seed, k, kl), ref;
  uint64_t now = 0;
  int r;
  if ((r = txn_begin(d)) != SHM_OK) return r;
  if (!lookup(d, k, kl, hash, &ref, NULL)) r = corrupt(d, "bad hash chain");
  else if (ref == D_NIL) r = SHM_DICT_NOTFOUND;
  else {
    dentry *e = entryof(d, ref);
    bopen(d, hash);
    jw(d, &e->gen, d->h->flush_gen);
    jw64(d, &e->expires, expiry(exptime, &now));
  }
  return txn_end(d, r);
}

/* a + b as Lua does: integers wrap, anything else is a double */
static int num_add(int ta, const unsigned char *a, int tb, const unsigned char *b,
                   unsigned char *out) {
  int64_t ia, ib;
  double da, db;
  if (ta == DV_INT && tb == DV_INT) {
    memcpy(&ia, a, 8);
    memcpy(&ib, b, 8);
    ia = (int64_t)((uint64_t)ia + (uint64_t)ib);
    memcpy(out, &ia, 8);
    return DV_INT;
  }
  if (ta == DV_INT) {
    memcpy(&ia, a, 8);
    da = (double)ia;
  } else {
    memcpy(&da, a, 8);
  }
  if (tb == DV_INT) {
    memcpy(&ib, b, 8);
    db = (double)ib;
  } else {
    memcpy(&db, b, 8);
  }
  da += db;
  memcpy(out, &da, 8);
  return DV_NUM;
}

/* incr: io holds the step (DV_NUM or DV_INT, 8 bytes at io->ptr, writable)
 * and gets the new value; init (or NULL) makes a missing key. */
static int shm_dict_incr(shm_dict *d, const char *k, size_t kl, dval *io, const dval *init,
                         double init_ttl, int *forcible) {
  uint32_t hash = dict_hash(d->seed, k, kl), ref;
  uint64_t now = 0;
  unsigned char nv[8];
  dview v;
  int r;
  *forcible = 0;
  if ((r = txn_begin(d)) != SHM_OK) return r;
  if ((r = write_begin(d, k, kl, hash, &now, &ref, NULL, &v)) != SHM_OK) goto done;
  if (ref == D_NIL || expired(d, v.e, &now)) {
    int t;
    if (init == NULL) {
      r = SHM_DICT_NOTFOUND;
      goto done;
    }
    t = num_add(init->type, (const unsigned char *)init->ptr, io->type,
                (const unsigned char *)io->ptr, nv);
    r = new_entry(d, k, kl, hash, t, nv, 8, 0, expiry(init_ttl, &now), 0, ref, forcible);
    io->type = t;
  } else {
    dentry *e = v.e;
    uint32_t type = v.type;
    if ((type != DV_NUM && type != DV_INT) || v.vlen != 8) {
      r = SHM_DICT_NOTNUM;
      goto done;
    }
    if (!lru_ok(d, ref)) {
      r = corrupt(d, "bad LRU list");
      goto done;
    }
    io->type = num_add((int)type, v.val, io->type, (const unsigned char *)io->ptr, nv);
    bopen(d, hash);
    jcopy(d, v.val, nv, 8);
    if ((uint32_t)io->type != type) jw(d, &e->meta, MKMETA(kl, io->type));
    lru_touch(d, ref);
  }
  memcpy((void *)io->ptr, nv, 8);
done:
  return txn_end(d, r);
}


/* lpush/rpush: the new length in *n.  Lists never evict (as ngx). */
static int shm_dict_push(shm_dict *d, const char *k, size_t kl, int left, const dval *v,
                         uint32_t *n) {
  uint32_t hash = dict_hash(d->seed, k, kl), ref, *link, node, *lw, end;
  uint64_t now = 0;
  int r, forcible = 0;
  dentry *e;
  dnode *nd;
  dview lv;
  if ((r = txn_begin(d)) != SHM_OK) return r;
  if ((r = write_begin(d, k, kl, hash, &now, &ref, &link, &lv)) != SHM_OK) goto done;
  if (ref != D_NIL) {
    int x;
    e = lv.e;
    x = expired(d, e, &now);
    if (!x && lv.type != DV_LIST) {
      r = SHM_DICT_NOTLIST;
      goto done;
    }
    if (x) { /* an expired value: freed in a step of its own (as expire_tail
              * would), so that the new list never reuses a block this
              * transaction freed: a rollback could not restore its bytes */
      if ((r = unlink_entry(d, ref, link)) != SHM_OK || (r = step(d)) != SHM_OK) goto done;
      ref = D_NIL;
    }
  }
  if (ref == D_NIL) {
    r = new_entry(d, k, kl, hash, DV_LIST, NULL, 0, 0, 0, 1, D_NIL, &forcible);
    if (r != SHM_OK) goto done;
  }
  if ((r = alloc_evicting(d, sizeof(dnode) + v->len, B_NODE, 1, ref, &node, &forcible)) != SHM_OK)
    goto done;
  if (!lookupv(d, k, kl, hash, &ref, NULL, &lv) || ref == D_NIL || lv.type != DV_LIST) {
    r = corrupt(d, "bad hash chain");
    goto done;
  }
  e = lv.e;
  lw = (uint32_t *)(void *)lv.val; /* 8-aligned, inside the block (the view checked) */
  end = left ? lw[0] : lw[1];
  if (end != D_NIL && !nodeok(d, end)) {
    r = corrupt(d, "bad list");
    goto done;
  }
  nd = nodeof(d, node);
  nd->meta = (uint32_t)v->type;
  nd->vlen = (uint32_t)v->len;
  nd->pad = 0;
  nd->next = left ? end : D_NIL;
  nd->prev = left ? D_NIL : end;
  memcpy(nd + 1, v->ptr, v->len);
  bopen(d, hash);
  if (end == D_NIL) jw(d, &lw[left ? 1 : 0], node); /* the only element: both ends */
  else if (left) jw(d, &nodeof(d, end)->prev, node);
  else jw(d, &nodeof(d, end)->next, node);
  jw(d, &lw[left ? 0 : 1], node);
  jw(d, &e->vlen, e->vlen + 1);
  *n = e->vlen;
  if (lru_ok(d, ref)) lru_touch(d, ref);
  else r = corrupt(d, "bad LRU list");
done:
  return txn_end(d, r);
}

/* lpop/rpop into buf; NOTFOUND when missing or expired; the last element
 * takes the key with it (as ngx). */
static int shm_dict_pop(shm_dict *d, const char *k, size_t kl, int left, dval *out, char *buf,
                        size_t cap) {
  uint32_t hash = dict_hash(d->seed, k, kl), ref, *link, node, other, *lw, ntype, nlen;
  uint64_t now = 0;
  int r;
  dentry *e;
  dnode *nd;
  dview lv;
  if ((r = txn_begin(d)) != SHM_OK) return r;
  if ((r = write_begin(d, k, kl, hash, &now, &ref, &link, &lv)) != SHM_OK) goto done;
  if (ref == D_NIL || expired(d, lv.e, &now)) {
    r = SHM_DICT_NOTFOUND;
    goto done;
  }
  e = lv.e;
  if (lv.type != DV_LIST) {
    r = SHM_DICT_NOTLIST;
    goto done;
  }
  lw = (uint32_t *)(void *)lv.val;
  node = left ? lw[0] : lw[1];
  if (node == D_NIL || !nodeview(d, node, &ntype, &nlen) || !lru_ok(d, ref)) {
    r = corrupt(d, "bad list");
    goto done;
  }
  nd = nodeof(d, node);
  out->type = (int)ntype;
  out->len = nlen;
  out->flags = 0;
  if (out->len > cap) {
    r = SHM_DICT_BUFSMALL;
    goto done;
  }
  memcpy(buf, nd + 1, out->len);
  out->ptr = buf;
  if (e->vlen <= 1) {
    r = unlink_entry(d, ref, link);
    goto done;
  }
  other = left ? nd->next : nd->prev;
  if (other == D_NIL || !nodeok(d, other)) {
    r = corrupt(d, "bad list");
    goto done;
  }
  bopen(d, hash);
  jw(d, left ? &nodeof(d, other)->prev : &nodeof(d, other)->next, D_NIL);
  jw(d, &lw[left ? 0 : 1], other);
  jw(d, &e->vlen, e->vlen - 1);
  lru_touch(d, ref);
  r = bfree(d, node);
done:
  return txn_end(d, r);
}

/* flush_all: O(1) (every entry stored before is now expired), then frees
 * up to 3 from the LRU tail, as ngx's forced round does. */
static int shm_dict_flush_all(shm_dict *d) {
  uint64_t now = 0;
  int r;
  if ((r = txn_begin(d)) != SHM_OK) return r;
  jw(d, &d->h->flush_gen, d->h->flush_gen + 1);
  if ((r = step(d)) == SHM_OK) r = expire_tail(d, 3, &now);
  return txn_end(d, r);
}

/* flush_expired: free up to max (0 = all) expired entries, from the LRU
 * tail, each its own step (with its list's elements). */
static int shm_dict_flush_expired(shm_dict *d, uint32_t max, uint32_t *freed) {
  uint64_t now = 0;
  uint32_t ref;
  dwalk w;
  int r;
  *freed = 0;
  if ((r = txn_begin(d)) != SHM_OK) return r;
  walk_init(&w, d->nunits);
  ref = d->h->lru_tail;
  while (ref != D_NIL && (max == 0 || *freed < max)) {
    uint32_t prev;
    dentry *e;
    if (!walk_ok(&w, ref) || !entryok(d, ref) || !lru_ok(d, ref)) {
      r = corrupt(d, "bad LRU list");
      break;
    }
    e = entryof(d, ref);
    prev = e->lru_prev;
    if (expired(d, e, &now)) {
      if ((r = drop_step(d, ref, &d->h->expired)) != SHM_OK) break;
      if (LOAD(&d->h->gc_head) != D_NIL && (r = gc_drain(d)) != SHM_OK) break;
      (*freed)++;
    }
    ref = prev;
  }
  return txn_end(d, r);
}

/* get_keys: live keys (up to max, 0 = all), least recently used first, into
 * buf as [u16 length][bytes]...; BUFSMALL with *need when it does not fit. */
static int shm_dict_keys(shm_dict *d, uint32_t max, char *buf, size_t cap, size_t *need,
                         uint32_t *nkeys) {
  uint64_t now = 0;
  uint32_t ref;
  size_t used = 0;
  dwalk w;
  int r;
  *nkeys = 0;
  if ((r = txn_begin(d)) != SHM_OK) return r;
  walk_init(&w, d->nunits);
  for (ref = d->h->lru_tail; ref != D_NIL && (max == 0 || *nkeys < max);) {
    dentry *e;
    dview v;
    if (!walk_ok(&w, ref) || !viewof(d, ref, &v)) {
      r = corrupt(d, "bad LRU list");
      break;
    }
    e = v.e;
    if (!expired(d, e, &now)) {
      uint16_t kl = (uint16_t)v.klen;
      if (used + 2 + kl <= cap) {
        memcpy(buf + used, &kl, 2);
        memcpy(buf + used + 2, v.key, kl);
      }
      used += 2 + (size_t)kl;
      (*nkeys)++;
    }
    ref = e->lru_prev;
  }
  *need = used;
  if (r == SHM_OK && used > cap) r = SHM_DICT_BUFSMALL;
  return txn_end(d, r);
}

typedef struct dstat {
  uint64_t count, evicted, expired, recovered, capacity, free;
} dstat;

/* Check the whole structure (under the lock): the free lists hold
 * free_units units of well-formed, doubly linked free blocks; the LRU list
 * holds count entries, doubly linked, each in its hash chain; the "to free"
 * chain is list elements.  Every walk bounded and cycle-checked.  NULL, or
 * what is wrong; *live: the entries not expired. */
static const char *check(shm_dict *d, uint64_t *live) {
  uint64_t units = 0, now = 0;
  uint32_t o, ref, prev, n = 0;
  dwalk w;
  *live = 0;
  for (o = 0; o <= d->maxorder; o++) {
    walk_init(&w, d->nunits);
    for (prev = D_NIL, ref = d->h->freelist[o]; ref != D_NIL; prev = ref, ref = blockw(d, ref)[1]) {
      if (!walk_ok(&w, ref) || !blockok(d, ref, B_FREE, o)) return "bad free list";
      if (blockw(d, ref)[2] != prev) return "bad free list links";
      units += 1u << o;
    }
  }
  if (units != d->h->free_units) return "free space does not add up";
  walk_init(&w, d->nunits);
  for (prev = D_NIL, ref = d->h->lru_head; ref != D_NIL; prev = ref, ref = entryof(d, ref)->lru_next) {
    if (!walk_ok(&w, ref) || !entryok(d, ref)) return "bad LRU list";
    if (entryof(d, ref)->lru_prev != prev) return "bad LRU links";
    if (linkto(d, ref) == NULL) return "bad hash chain";
    if (!expired(d, entryof(d, ref), &now)) (*live)++;
    n++;
  }
  if (prev != d->h->lru_tail) return "bad LRU tail";
  if (n != d->h->count) return "entry count does not add up";
  walk_init(&w, d->nunits);
  for (ref = d->h->gc_head; ref != D_NIL; ref = nodeof(d, ref)->next)
    if (!walk_ok(&w, ref) || !nodeok(d, ref)) return "bad list";
  return NULL;
}

/* stat: the figures, after checking the whole structure. */
static int shm_dict_stat(shm_dict *d, dstat *st) {
  const char *why;
  int r;
  memset(st, 0, sizeof *st);
  if ((r = txn_begin(d)) != SHM_OK) return r;
  if ((why = check(d, &st->count)) != NULL) return txn_end(d, corrupt(d, why));
  st->evicted = d->h->evicted;
  st->expired = d->h->expired;
  st->recovered = d->h->recovered;
  st->capacity = d->size;
  st->free = (uint64_t)d->h->free_units << D_UNITSHIFT;
  return txn_end(d, r);
}

/* ---- entry points for LuaJIT's FFI ----
 * The front module (lua/shm.lua under LuaJIT) calls these through a table of
 * function pointers (shm.dict._ffi, a light userdata), never by symbol: only
 * luaopen_shm_core is exported.  `ud` is a dict's userdata, whose metatable
 * the caller checked; each call checks that it is still attached.  They
 * return a status as the core does (shm_status, then the SHM_DICT_ ones), or
 * FFI_DETACHED, or FFI_NOMEM.  Values cross as (type, bytes): DV_ types. */

typedef struct ldict {
  shm_dict d;
  shm_segment *seg; /* kept alive by the user value */
} ldict;

#define FFI_DETACHED (-1)
#define FFI_NOMEM (-2)

static shm_dict *ffi_dict(void *ud) {
  ldict *ld = (ldict *)ud;
  return ld != NULL && ld->seg != NULL && ld->seg->addr != NULL && ld->seg->addr == ld->d.base
             ? &ld->d
             : NULL;
}

static int ffi_get(void *ud, const char *k, size_t kl, int stale, int *type, const char **ptr,
                   size_t *len, uint32_t *flags, int *isstale) {
  shm_dict *d = ffi_dict(ud);
  dval v;
  int r, tries;
  if (d == NULL) return FFI_DETACHED;
  v.len = 0;
  for (tries = 0;; tries++) {
    if (shm_buf_reserve(&d->buf, v.len) != 0) return FFI_NOMEM;
    r = shm_dict_get(d, k, kl, stale, &v, d->buf.p, d->buf.size);
    if (r != SHM_DICT_BUFSMALL || tries > 16) break;
  }
  if (r == SHM_OK) {
    *type = v.type;
    *ptr = v.ptr;
    *len = v.len;
    *flags = v.flags;
    *isstale = v.stale;
  }
  return r;
}

static int ffi_store(void *ud, int op, int safe, const char *k, size_t kl, int type,
                     const char *v, size_t vlen, uint32_t flags, double exptime, int *forcible) {
  shm_dict *d = ffi_dict(ud);
  dval val;
  if (d == NULL) return FFI_DETACHED;
  val.type = type;
  val.ptr = v;
  val.len = vlen;
  val.flags = flags;
  val.stale = 0;
  return shm_dict_store(d, op, safe, k, kl, &val, exptime, NULL, 0, forcible);
}

/* incr: *type and the 8 bytes at val are the step in, the new value out;
 * inittype 0: no init. */
static int ffi_incr(void *ud, const char *k, size_t kl, int *type, char *val, int inittype,
                    const char *init, double init_ttl, int *forcible) {
  shm_dict *d = ffi_dict(ud);
  dval io, in;
  int r;
  if (d == NULL) return FFI_DETACHED;
  io.type = *type;
  io.ptr = val;
  io.len = 8;
  in.type = inittype;
  in.ptr = init;
  in.len = 8;
  r = shm_dict_incr(d, k, kl, &io, inittype != 0 ? &in : NULL, init_ttl, forcible);
  *type = io.type;
  return r;
}

static int ffi_ttl(void *ud, const char *k, size_t kl, double *ttl) {
  shm_dict *d = ffi_dict(ud);
  return d == NULL ? FFI_DETACHED : shm_dict_ttl(d, k, kl, ttl);
}

static int ffi_expire(void *ud, const char *k, size_t kl, double exptime) {
  shm_dict *d = ffi_dict(ud);
  return d == NULL ? FFI_DETACHED : shm_dict_expire(d, k, kl, exptime);
}

static const char *ffi_why(void *ud) {
  ldict *ld = (ldict *)ud;
  return ld != NULL && ld->d.why != NULL ? ld->d.why : "?";
}

/* The table the front module casts shm.dict._ffi to (keep in step with the
 * cdef in lua/shm.lua). */
typedef struct shm_dict_ffi_api {
  int version;
  int (*get)(void *, const char *, size_t, int, int *, const char **, size_t *, uint32_t *, int *);
  int (*store)(void *, int, int, const char *, size_t, int, const char *, size_t, uint32_t, double,
               int *);
  int (*incr)(void *, const char *, size_t, int *, char *, int, const char *, double, int *);
  int (*ttl)(void *, const char *, size_t, double *);
  int (*expire)(void *, const char *, size_t, double);
  const char *(*why)(void *);
} shm_dict_ffi_api;

static const shm_dict_ffi_api dict_ffi = {1,       ffi_get,    ffi_store, ffi_incr,
                                          ffi_ttl, ffi_expire, ffi_why};

/* ======================================================================
 * The binding: arguments, values, results.  Everything here runs outside
 * the lock; the core above never sees a lua_State.
 * ====================================================================== */

#define MAXDEPTH 100 /* nesting of table values */

/* The dict at 1, attached.  The methods carry the metatable as their first
 * upvalue: a type check by metatable identity without a registry lookup. */
static shm_dict *checkdict(lua_State *L) {
  ldict *ld = (ldict *)shm_checkupclass(L, 1, DICT_MT);
  if (ld->seg->addr == NULL || ld->seg->addr != ld->d.base)
    luaL_error(L, "attempt to use a detached dict");
  return &ld->d;
}

static int raise_corrupt(lua_State *L, shm_dict *d) {
  return luaL_error(L, "shm.dict: corrupted dict (%s)", d->why != NULL ? d->why : "?");
}

/* The key at idx: NULL after pushing `nil, msg` (2 results) for a key ngx
 * refuses with a message.  Numbers (and, unless strict, anything else) are
 * converted with tostring, as ngx does; strict (the list methods) raises
 * for other types, as ngx's C methods do. */
static const char *checkkey(lua_State *L, int idx, size_t *kl, int strict) {
  const char *k;
  const char *err = NULL;
  if (lua_isnoneornil(L, idx)) err = "nil key";
  else if (lua_type(L, idx) == LUA_TSTRING || lua_type(L, idx) == LUA_TNUMBER)
    k = lua_tolstring(L, idx, kl);
  else if (strict)
    k = luaL_checklstring(L, idx, kl);
  else {
    k = luaL_tolstring(L, idx, kl);
    lua_replace(L, idx);
  }
  if (err == NULL && *kl == 0) err = "empty key";
  if (err == NULL && *kl > D_MAXKEY) err = "key too long";
  if (err == NULL) return k;
  lua_pushnil(L);
  lua_pushstring(L, err);
  return NULL;
}

/* The value buffer, at least n bytes (grown outside the lock). */
static char *dictbuf(lua_State *L, shm_dict *d, size_t n) {
  if (shm_buf_reserve(&d->buf, n) != 0) luaL_error(L, "not enough memory");
  return d->buf.p;
}

/* ---- values: Lua <-> bytes ---- */

/* The encoding buffer: a userdata in a fixed stack slot, replaced by a
 * larger one as it grows (so the stack above it is free for lua_next, and an
 * error leaves nothing to free). */
typedef struct ebuf {
  lua_State *L;
  int slot;
  char *p;
  size_t n, cap;
} ebuf;

static void eb_add(ebuf *b, const void *s, size_t n) {
  if (b->cap - b->n < n) {
    size_t want = b->cap;
    char *np;
    while (want - b->n < n) {
      if (want > SIZE_MAX / 2) luaL_error(b->L, "not enough memory");
      want *= 2;
    }
    np = (char *)lua_newuserdatauv(b->L, want, 0);
    memcpy(np, b->p, b->n);
    lua_replace(b->L, b->slot);
    b->p = np;
    b->cap = want;
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
}

static void eb_byte(ebuf *b, int c) {
  char ch = (char)c;
  eb_add(b, &ch, 1);
}

static void eb_u32(ebuf *b, uint32_t v) { eb_add(b, &v, 4); }

/* Is the number at idx stored as an integer?  On Lua 5.3+ when it is one;
 * where numbers are doubles (5.1, 5.2, LuaJIT) when it is whole and below
 * 2^53 (exact), so that 5.3+ reads back an integer: 3 written by LuaJIT is 3
 * in 5.4, not 3.0.  A float written by 5.3+ stays a float. */
static int wholenumber(lua_State *L, int idx, int64_t *i) {
#if LUA_VERSION_NUM >= 503
  if (!lua_isinteger(L, idx)) return 0;
  *i = (int64_t)lua_tointeger(L, idx);
  return 1;
#else
  double n = (double)lua_tonumber(L, idx);
  if (!(n == floor(n) && fabs(n) < 9007199254740992.0)) return 0;
  *i = (int64_t)n;
  return 1;
#endif
}

/* Encode the table at idx (visited: a table of the tables being encoded);
 * 0 if it holds what a dict cannot store. */
static int encode(lua_State *L, ebuf *b, int idx, int visited, int depth);

static int encode_item(lua_State *L, ebuf *b, int idx, int visited, int depth) {
  switch (lua_type(L, idx)) {
  case LUA_TBOOLEAN:
    eb_byte(b, lua_toboolean(L, idx) ? 't' : 'f');
    return 1;
  case LUA_TNUMBER: {
    int64_t i;
    if (wholenumber(L, idx, &i)) {
      eb_byte(b, 'i');
      eb_add(b, &i, 8);
    } else {
      double n = (double)lua_tonumber(L, idx);
      eb_byte(b, 'd');
      eb_add(b, &n, 8);
    }
    return 1;
  }
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    if (n > UINT32_MAX) return 0;
    eb_byte(b, 's');
    eb_u32(b, (uint32_t)n);
    eb_add(b, s, n);
    return 1;
  }
  case LUA_TTABLE:
    return encode(L, b, idx, visited, depth + 1);
  default:
    return 0;
  }
}

static int encode(lua_State *L, ebuf *b, int idx, int visited, int depth) {
  uint32_t n = 0;
  if (depth > MAXDEPTH) return 0;
  luaL_checkstack(L, 6, "table value too deep");
  if (lua_getmetatable(L, idx)) return 0; /* plain tables only */
  lua_pushvalue(L, idx);
  if (lua_rawget(L, visited) != LUA_TNIL) return 0; /* a cycle */
  lua_pop(L, 1);
  for (lua_pushnil(L); lua_next(L, idx);) {
    lua_pop(L, 1);
    n++;
  }
  lua_pushvalue(L, idx);
  lua_pushboolean(L, 1);
  lua_rawset(L, visited);
  eb_byte(b, '{');
  eb_u32(b, n);
  for (lua_pushnil(L); lua_next(L, idx);) {
    int top = lua_gettop(L), kt = lua_type(L, top - 1);
    if (kt != LUA_TSTRING && kt != LUA_TNUMBER && kt != LUA_TBOOLEAN) return 0;
    if (!encode_item(L, b, top - 1, visited, depth) || !encode_item(L, b, top, visited, depth))
      return 0;
    lua_settop(L, top - 1);
  }
  lua_pushvalue(L, idx);
  lua_pushnil(L);
  lua_rawset(L, visited);
  return 1;
}

typedef struct dsrc {
  const unsigned char *p, *end;
} dsrc;

static int decode_item(lua_State *L, dsrc *s, int depth);

static int decode_table(lua_State *L, dsrc *s, int depth) {
  uint32_t n, i;
  if (depth > MAXDEPTH || s->end - s->p < 4) return 0;
  memcpy(&n, s->p, 4);
  s->p += 4;
  if (n > (size_t)(s->end - s->p) / 2) return 0; /* each item takes a byte at least */
  luaL_checkstack(L, 4, "table value too deep");
  lua_createtable(L, 0, n < 1024 ? (int)n : 1024);
  for (i = 0; i < n; i++) {
    if (!decode_item(L, s, depth) || lua_isnil(L, -1)) return 0;
    if (!decode_item(L, s, depth)) return 0;
    lua_rawset(L, -3);
  }
  return 1;
}

static int decode_item(lua_State *L, dsrc *s, int depth) {
  int tag;
  if (s->p >= s->end) return 0;
  tag = *s->p++;
  switch (tag) {
  case 't': case 'f':
    lua_pushboolean(L, tag == 't');
    return 1;
  case 'i': case 'd': {
    if (s->end - s->p < 8) return 0;
    if (tag == 'i') {
      int64_t i;
      memcpy(&i, s->p, 8);
      lua_pushinteger(L, (lua_Integer)i);
    } else {
      double n;
      memcpy(&n, s->p, 8);
      lua_pushnumber(L, (lua_Number)n);
    }
    s->p += 8;
    return 1;
  }
  case 's': {
    uint32_t n;
    if (s->end - s->p < 4) return 0;
    memcpy(&n, s->p, 4);
    s->p += 4;
    if (n > (size_t)(s->end - s->p)) return 0;
    lua_pushlstring(L, (const char *)s->p, n);
    s->p += n;
    return 1;
  }
  case '{':
    return decode_table(L, s, depth + 1);
  default:
    return 0;
  }
}

/* The value at idx as a dval (the bytes live in *num or on the stack above
 * idx); 0 for a type the dict cannot store.  `list`: strings and numbers only. */
static int tovalue(lua_State *L, int idx, dval *v, unsigned char *num, int list) {
  v->flags = 0;
  v->ptr = (const char *)num;
  switch (lua_type(L, idx)) {
  case LUA_TNONE:
  case LUA_TNIL:
    if (list) return 0;
    v->type = DV_NIL;
    v->len = 0;
    return 1;
  case LUA_TBOOLEAN:
    if (list) return 0;
    v->type = DV_BOOL;
    num[0] = (unsigned char)lua_toboolean(L, idx);
    v->len = 1;
    return 1;
  case LUA_TNUMBER: {
    int64_t i;
    v->len = 8;
    if (wholenumber(L, idx, &i)) {
      v->type = DV_INT;
      memcpy(num, &i, 8);
    } else {
      double n = (double)lua_tonumber(L, idx);
      v->type = DV_NUM;
      memcpy(num, &n, 8);
    }
    return 1;
  }
  case LUA_TSTRING:
    v->type = DV_STR;
    v->ptr = lua_tolstring(L, idx, &v->len);
    return v->len <= UINT32_MAX;
  case LUA_TTABLE: {
    ebuf b;
    int visited;
    if (list) return 0;
    lua_newtable(L);
    visited = lua_gettop(L);
    b.L = L;
    b.cap = 256;
    b.n = 0;
    b.p = (char *)lua_newuserdatauv(L, b.cap, 0);
    b.slot = lua_gettop(L);
    if (!encode(L, &b, idx, visited, 1)) return 0;
    lua_settop(L, b.slot); /* the buffer stays on the stack while the core copies it */
    v->type = DV_TABLE;
    v->ptr = b.p;
    v->len = b.n;
    return v->len <= UINT32_MAX;
  }
  default:
    return 0;
  }
}

/* The handle's buffer, lent to a caller that makes Lua values from what the
 * core copied into it: making a value can run a finalizer that calls this
 * dict again, which then grows a buffer of its own instead of moving this
 * one.  give_buf puts it back (or frees it, if a nested call made another). */
static void take_buf(shm_dict *d, shm_buf *lent) {
  *lent = d->buf;
  d->buf.p = NULL;
  d->buf.size = 0;
}

static void give_buf(shm_dict *d, shm_buf *lent) {
  if (d->buf.p == NULL) d->buf = *lent;
  else shm_buf_free(lent);
}

/* Push a value copied out of the dict (into `lent`, given back if it raises). */
static void pushvalue(lua_State *L, shm_dict *d, const dval *v, shm_buf *lent) {
  switch (v->type) {
  case DV_BOOL:
    lua_pushboolean(L, v->len > 0 && v->ptr[0] != 0);
    break;
  case DV_INT: {
    int64_t i = 0;
    if (v->len == 8) memcpy(&i, v->ptr, 8);
    lua_pushinteger(L, (lua_Integer)i);
    break;
  }
  case DV_NUM: {
    double n = 0;
    if (v->len == 8) memcpy(&n, v->ptr, 8);
    lua_pushnumber(L, (lua_Number)n);
    break;
  }
  case DV_TABLE: {
    dsrc s;
    int top = lua_gettop(L);
    s.p = (const unsigned char *)v->ptr;
    s.end = s.p + v->len;
    if (s.p == s.end || *s.p++ != '{' || !decode_table(L, &s, 1) || s.p != s.end) {
      lua_settop(L, top);
      if (lent != NULL) give_buf(d, lent);
      d->why = "bad table value";
      raise_corrupt(L, d);
    }
    break;
  }
  default:
    lua_pushlstring(L, v->ptr, v->len);
    break;
  }
}

/* Flags are pushed only when non-zero (as ngx), as the int32 ngx gives. */
static int pushflags(lua_State *L, uint32_t flags, int always) {
  if (flags == 0 && !always) return 0;
  if (flags == 0) lua_pushnil(L);
  else lua_pushinteger(L, (lua_Integer)(int32_t)flags);
  return 1;
}

/* Raise for a core failure that is not a result (a timeout is one: nil,
 * "timeout"). */
static int fail(lua_State *L, shm_dict *d, int r) {
  if (r == SHM_CORRUPT) return raise_corrupt(L, d);
  if (r == SHM_TIMEOUT) {
    lua_pushnil(L);
    lua_pushliteral(L, "timeout");
    return 2;
  }
  return luaL_error(L, "shm.dict: unexpected status %d", r);
}

/* nil and ngx's message for a status that is a result; raises otherwise. */
static int nilerr(lua_State *L, shm_dict *d, int r) {
  const char *msg;
  switch (r) {
  case SHM_DICT_NOTFOUND: msg = "not found"; break;
  case SHM_DICT_NOTNUM: msg = "not a number"; break;
  case SHM_DICT_NOMEM: msg = "no memory"; break;
  case SHM_DICT_NOTLIST: msg = "value not a list"; break;
  case SHM_DICT_ISLIST: msg = "value is a list"; break;
  default: return fail(L, d, r);
  }
  lua_pushnil(L);
  lua_pushstring(L, msg);
  return 2;
}

/* ---- reads ---- */

static int l_get_common(lua_State *L, int stale) {
  shm_dict *d = checkdict(L);
  size_t kl;
  const char *k = checkkey(L, 2, &kl, 0);
  dval v;
  int r, tries;
  if (k == NULL) return 2;
  v.len = 0;
  for (tries = 0;; tries++) {
    char *buf = dictbuf(L, d, v.len);
    r = shm_dict_get(d, k, kl, stale, &v, buf, d->buf.size);
    if (r != SHM_DICT_BUFSMALL || tries > 16) break;
  }
  switch (r) {
  case SHM_OK: {
    shm_buf lent;
    take_buf(d, &lent);
    pushvalue(L, d, &v, &lent);
    give_buf(d, &lent);
    if (!stale) return 1 + pushflags(L, v.flags, 0);
    pushflags(L, v.flags, 1);
    lua_pushboolean(L, v.stale);
    return 3;
  }
  case SHM_DICT_NOTFOUND:
    lua_pushnil(L);
    return 1;
  default:
    return nilerr(L, d, r);
  }
}

/***
A dictionary in shared memory with ngx.shared.DICT's API (see `shm.dict.create`).
@type dict
*/

/***
The value of a key, and its flags when they are not 0.
@function dict:get
@tparam string key (a number is converted with `tostring`)
@return the value (string, number, boolean or table), or `nil` when missing or expired
@treturn[opt] integer flags
@treturn[2] nil
@treturn[2] string `"nil key"`, `"empty key"`, `"key too long"` or `"value is a list"`
@usage local v, flags = d:get("user:42")
*/
static int l_get(lua_State *L) { return l_get_common(L, 0); }

/***
As `get`, but an expired value that is still in memory is returned too.
@function dict:get_stale
@tparam string key
@return the value
@treturn integer|nil flags
@treturn boolean stale: whether it has expired
@usage local v, _, stale = d:get_stale("config")
*/
static int l_get_stale(lua_State *L) { return l_get_common(L, 1); }

/* ---- stores ---- */

/* exptime at idx: nil/false = 0; raises for a negative or non-number. */
static double optexptime(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx) || (lua_type(L, idx) == LUA_TBOOLEAN && !lua_toboolean(L, idx)))
    return 0;
  if (lua_type(L, idx) != LUA_TNUMBER || lua_tonumber(L, idx) < 0)
    luaL_error(L, "bad \"exptime\" argument");
  return (double)lua_tonumber(L, idx);
}

static uint32_t optflags(lua_State *L, int idx) {
  lua_Number f;
  if (lua_isnoneornil(L, idx) || (lua_type(L, idx) == LUA_TBOOLEAN && !lua_toboolean(L, idx)))
    return 0;
  if (lua_type(L, idx) != LUA_TNUMBER) luaL_error(L, "bad \"flags\" argument");
  f = lua_tonumber(L, idx);
  if (!(f >= -2147483648.0 && f < 4294967296.0)) luaL_error(L, "bad \"flags\" argument");
  return f < 0 ? (uint32_t)(int32_t)f : (uint32_t)f;
}

static int store(lua_State *L, int op, int safe) {
  shm_dict *d = checkdict(L);
  double exptime = optexptime(L, 4);
  uint32_t flags = optflags(L, 5);
  size_t kl;
  const char *k;
  unsigned char num[8];
  dval v;
  int r, forcible = 0;
  if ((k = checkkey(L, 2, &kl, 0)) == NULL) return 2;
  if (!tovalue(L, 3, &v, num, 0)) {
    lua_pushnil(L);
    lua_pushliteral(L, "bad value type");
    return 2;
  }
  if (v.type == DV_NIL && op != OP_SET) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "attempt to add or replace nil values");
    lua_pushboolean(L, 0);
    return 3;
  }
  v.flags = flags;
  r = shm_dict_store(d, op, safe, k, kl, &v, exptime, NULL, 0, &forcible);
  if (r == SHM_CORRUPT || r == SHM_ERRNO) return fail(L, d, r);
  if (r == SHM_TIMEOUT) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "timeout");
    lua_pushboolean(L, 0);
    return 3;
  }
  lua_pushboolean(L, r == SHM_OK);
  switch (r) {
  case SHM_OK: lua_pushnil(L); break;
  case SHM_DICT_EXISTS: lua_pushliteral(L, "exists"); break;
  case SHM_DICT_NOTFOUND: lua_pushliteral(L, "not found"); break;
  case SHM_DICT_NOMEM: lua_pushliteral(L, "no memory"); break;
  default: return fail(L, d, r);
  }
  lua_pushboolean(L, forcible);
  return 3;
}

/***
Store a value (`nil` deletes), evicting least recently used items when full.
Values: strings (binary-safe), numbers (integers stay integers on Lua 5.3+),
booleans, and plain tables of those (nested; no cycles, functions or userdata).
@function dict:set
@tparam string key
@param value
@tparam[opt=0] number exptime seconds (millisecond resolution); 0 never expires
@tparam[opt=0] integer flags user flags, returned by `get`
@treturn boolean ok
@treturn string|nil err `"no memory"`
@treturn boolean forcible: whether live items were evicted to make room
@usage local ok, err, forcible = d:set("session:1", {user = "ann"}, 3600)
*/
static int l_set(lua_State *L) { return store(L, OP_SET, 0); }

/***
As `set`, but never evicts: `false, "no memory"` when full.
@function dict:safe_set
@usage assert(d:safe_set("k", "v"))
*/
static int l_safe_set(lua_State *L) { return store(L, OP_SET, 1); }

/***
As `set`, only if the key is missing (or expired): else `false, "exists"`.
@function dict:add
@usage if d:add("lock:job", true, 30) then run() end
*/
static int l_add(lua_State *L) { return store(L, OP_ADD, 0); }

/***
As `add`, but never evicts.
@function dict:safe_add
@usage d:safe_add("k", 1)
*/
static int l_safe_add(lua_State *L) { return store(L, OP_ADD, 1); }

/***
As `set`, only if the key is there (and live): else `false, "not found"`.
@function dict:replace
@usage d:replace("config", new)
*/
static int l_replace(lua_State *L) { return store(L, OP_REPLACE, 0); }

/* Are the values at a and b equal as dict values: raw-equal, or plain tables
 * with the same keys and equal values (nested, depth-bounded)? */
static int sameluavalue(lua_State *L, int a, int b, int depth) {
  int n = 0, same = 1;
  if (lua_type(L, a) != LUA_TTABLE || lua_type(L, b) != LUA_TTABLE) return lua_rawequal(L, a, b);
  if (depth > MAXDEPTH) return 0;
  luaL_checkstack(L, 4, "table value too deep");
  for (lua_pushnil(L); same && lua_next(L, a);) {
    int top = lua_gettop(L);
    lua_pushvalue(L, top - 1);
    lua_rawget(L, b);
    same = !lua_isnil(L, -1) && sameluavalue(L, top, top + 1, depth + 1);
    lua_settop(L, top - 1);
    n++;
  }
  if (!same) {
    lua_pop(L, 1);
    return 0;
  }
  for (lua_pushnil(L); lua_next(L, b);) {
    lua_pop(L, 1);
    n--;
  }
  return n == 0;
}

/***
Compare-and-set: store `value` only if the key holds `old_value` (and
`old_flags`, when given): `old_value` nil means "only if the key is missing".
Tables compare by content, numbers as Lua compares them (`1 == 1.0`).  The
comparison and the store are one atomic step with every other method, and a
process killed inside it leaves the old or the new value.  `value` nil deletes
the key (compare-and-delete).  Never evicts (as `safe_set`).
@function dict:cas
@tparam string key
@param value the new value (`nil`: delete)
@tparam[opt=0] number exptime
@tparam[opt=0] integer flags
@param old_value the value expected (`nil`: the key must be missing)
@tparam[opt] integer old_flags the flags expected (not compared when `nil`)
@treturn boolean true when stored
@treturn string|nil `"changed"` (the key holds something else; the current
value and flags follow), `"not found"` (the key is missing), `"no memory"`
@treturn boolean forcible (always `false`: cas never evicts)
@return the current value, when `"changed"`
@treturn integer|nil the current flags, when `"changed"`
@usage
repeat
  local v = d:get("config") or {}
  local new = update(v)
until d:cas("config", new, 0, 0, next(v) and v or nil)
*/
static int l_cas(lua_State *L) {
  shm_dict *d = checkdict(L);
  double exptime;
  uint32_t flags, oflags;
  int cmpflags, r, forcible = 0, tries, top;
  size_t kl;
  const char *k;
  unsigned char num[8], onum[8];
  dval v, x;
  lua_settop(L, 7); /* self key value exptime flags old_value old_flags */
  exptime = optexptime(L, 4);
  flags = optflags(L, 5);
  cmpflags = !lua_isnil(L, 7);
  oflags = optflags(L, 7);
  if ((k = checkkey(L, 2, &kl, 0)) == NULL) return 2;
  if (!tovalue(L, 3, &v, num, 0)) { /* (a table's bytes stay on the stack) */
    lua_pushnil(L);
    lua_pushliteral(L, "bad value type");
    return 2;
  }
  v.flags = flags;
  top = lua_gettop(L);
  for (tries = 0;; tries++) {
    lua_settop(L, top);
    if (lua_type(L, 6) == LUA_TTABLE) {
      /* a table compares by content: copy out what is there, compare it
       * here, then cas against exactly those bytes (again if they change) */
      dval cur;
      cur.len = 0;
      do r = shm_dict_get(d, k, kl, 0, &cur, dictbuf(L, d, cur.len), d->buf.size);
      while (r == SHM_DICT_BUFSMALL);
      if (r == SHM_OK && cur.type != DV_TABLE) r = SHM_DICT_CHANGED;
      if (r != SHM_OK) break;
      lua_pushlstring(L, cur.ptr, cur.len); /* top + 1: the bytes */
      x = cur;
      x.ptr = lua_tostring(L, top + 1);
      pushvalue(L, d, &x, NULL); /* top + 2: decoded */
      if (!sameluavalue(L, 6, top + 2, 1) || (cmpflags && cur.flags != oflags)) {
        r = SHM_DICT_CHANGED;
        break;
      }
    } else if (!tovalue(L, 6, &x, onum, 0)) {
      r = SHM_DICT_CHANGED; /* a value a dict never holds */
      break;
    }
    x.flags = oflags;
    r = shm_dict_store(d, OP_SET, 1, k, kl, &v, exptime, &x, cmpflags, &forcible);
    if (r != SHM_DICT_CHANGED || lua_type(L, 6) != LUA_TTABLE || tries >= 100) break;
  }
  lua_settop(L, top);
  if (r == SHM_CORRUPT || r == SHM_ERRNO) return fail(L, d, r);
  lua_pushboolean(L, r == SHM_OK);
  switch (r) {
  case SHM_OK: lua_pushnil(L); break;
  case SHM_DICT_CHANGED: lua_pushliteral(L, "changed"); break;
  case SHM_DICT_NOTFOUND: lua_pushliteral(L, "not found"); break;
  case SHM_DICT_NOMEM: lua_pushliteral(L, "no memory"); break;
  case SHM_TIMEOUT: lua_pushliteral(L, "timeout"); break;
  case SHM_DICT_ISLIST: lua_pushliteral(L, "changed"); r = SHM_DICT_CHANGED; break;
  default: return fail(L, d, r);
  }
  lua_pushboolean(L, forcible);
  if (r != SHM_DICT_CHANGED) return 3;
  /* what is there now, as get gives it (nil for a list) */
  lua_getfield(L, 1, "get");
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_call(L, 2, 2);
  if (lua_isnil(L, -2)) {
    lua_pushnil(L);
    lua_replace(L, -2);
  }
  return 5;
}

/***
Delete a key (as `set(key, nil)`).
@function dict:delete
@tparam string key
@treturn boolean true
@usage d:delete("session:1")
*/
static int l_delete(lua_State *L) {
  lua_settop(L, 2);
  lua_pushnil(L);
  lua_pushnil(L);
  lua_pushnil(L);
  return store(L, OP_SET, 0);
}

/* A number at idx (numeric strings converted): 0 if none. */
static int tonum(lua_State *L, int idx, dval *v, unsigned char *num) {
  if (lua_type(L, idx) == LUA_TSTRING) {
    lua_Number n;
#if LUA_VERSION_NUM >= 503
    if (lua_stringtonumber(L, lua_tostring(L, idx)) != 0) {
      lua_replace(L, idx);
      return tovalue(L, idx, v, num, 1);
    }
    return 0;
#else
    if (!lua_isnumber(L, idx)) return 0;
    n = lua_tonumber(L, idx);
    lua_pushnumber(L, n);
    lua_replace(L, idx);
#endif
    (void)n;
  }
  if (lua_type(L, idx) != LUA_TNUMBER) return 0;
  return tovalue(L, idx, v, num, 1);
}

/***
Add `step` to a number: integers stay integers (Lua 5.3+), anything else adds as
floats.  A missing (or expired) key is made `init + step` when `init` is given.
@function dict:incr
@tparam string key
@tparam number step
@tparam[opt] number init
@tparam[opt] number init_ttl seconds, for a key made from `init`
@treturn number the new value
@treturn[opt] nil
@treturn[opt] boolean forcible (when `init` is given)
@treturn[2] nil
@treturn[2] string `"not found"`, `"not a number"`, `"no memory"`
@usage local hits = d:incr("hits", 1, 0)
*/
static int l_incr(lua_State *L) {
  shm_dict *d = checkdict(L);
  size_t kl;
  const char *k;
  unsigned char sb[8], ib[8];
  dval step, init;
  int hasinit, r, forcible = 0;
  double init_ttl = 0;
  lua_settop(L, 5);
  if ((k = checkkey(L, 2, &kl, 0)) == NULL) return 2;
  if (!tonum(L, 3, &step, sb))
    return luaL_error(L, "bad step arg: number expected, got %s", luaL_typename(L, 3));
  hasinit = lua_toboolean(L, 4);
  if (hasinit && !tonum(L, 4, &init, ib))
    return luaL_error(L, "bad init arg: number expected, got %s", luaL_typename(L, 4));
  if (!lua_isnil(L, 5)) {
    if (lua_type(L, 5) != LUA_TNUMBER && !lua_isnumber(L, 5))
      return luaL_error(L, "bad init_ttl arg: number expected, got %s", luaL_typename(L, 5));
    init_ttl = (double)lua_tonumber(L, 5);
    if (init_ttl < 0) return luaL_error(L, "bad \"init_ttl\" argument");
    if (!hasinit) return luaL_error(L, "must provide \"init\" when providing \"init_ttl\"");
  }
  r = shm_dict_incr(d, k, kl, &step, hasinit ? &init : NULL, init_ttl, &forcible);
  switch (r) {
  case SHM_OK:
    pushvalue(L, d, &step, NULL);
    if (!hasinit) return 1;
    lua_pushnil(L);
    lua_pushboolean(L, forcible);
    return 3;
  default: return nilerr(L, d, r);
  }
}

/* ---- lists ---- */

static void checkargs(lua_State *L, int n) {
  int top = lua_gettop(L);
  if (top != n) luaL_error(L, "expecting %d arguments, but only seen %d", n, top);
}

static int push(lua_State *L, int left) {
  shm_dict *d;
  size_t kl;
  const char *k;
  unsigned char num[8];
  dval v;
  uint32_t n = 0;
  int r;
  checkargs(L, 3);
  d = checkdict(L);
  if ((k = checkkey(L, 2, &kl, 1)) == NULL) return 2;
  if (!tovalue(L, 3, &v, num, 1)) {
    lua_pushnil(L);
    lua_pushliteral(L, "bad value type");
    return 2;
  }
  r = shm_dict_push(d, k, kl, left, &v, &n);
  switch (r) {
  case SHM_OK: lua_pushinteger(L, (lua_Integer)n); return 1;
  default: return nilerr(L, d, r);
  }
}

/***
Push to the head of a list (made when missing); lists hold strings and numbers.
@function dict:lpush
@tparam string key
@tparam string|number value
@treturn integer the list's length
@treturn[2] nil
@treturn[2] string `"value not a list"`, `"bad value type"`, `"no memory"`
@usage d:lpush("jobs", "job 1")
*/
static int l_lpush(lua_State *L) { return push(L, 1); }

/***
Push to the tail of a list.
@function dict:rpush
@usage d:rpush("jobs", "job 2")
*/
static int l_rpush(lua_State *L) { return push(L, 0); }

static int pop(lua_State *L, int left) {
  shm_dict *d;
  size_t kl;
  const char *k;
  dval v;
  int r, tries;
  checkargs(L, 2);
  d = checkdict(L);
  if ((k = checkkey(L, 2, &kl, 1)) == NULL) return 2;
  v.len = 0;
  for (tries = 0;; tries++) {
    char *buf = dictbuf(L, d, v.len);
    r = shm_dict_pop(d, k, kl, left, &v, buf, d->buf.size);
    if (r != SHM_DICT_BUFSMALL || tries > 16) break;
  }
  switch (r) {
  case SHM_OK: {
    shm_buf lent;
    take_buf(d, &lent);
    pushvalue(L, d, &v, &lent);
    give_buf(d, &lent);
    return 1;
  }
  case SHM_DICT_NOTFOUND: lua_pushnil(L); return 1;
  default: return nilerr(L, d, r);
  }
}

/***
Pop from the head of a list; the last element takes the key with it.
@function dict:lpop
@tparam string key
@return the element, or `nil` when the list is empty or missing
@usage local job = d:lpop("jobs")
*/
static int l_lpop(lua_State *L) { return pop(L, 1); }

/***
Pop from the tail of a list.
@function dict:rpop
@usage local last = d:rpop("jobs")
*/
static int l_rpop(lua_State *L) { return pop(L, 0); }

/***
The length of a list (0 when missing).  Takes no lock.
@function dict:llen
@tparam string key
@treturn integer
@usage print(d:llen("jobs"))
*/
static int l_llen(lua_State *L) {
  shm_dict *d;
  size_t kl;
  const char *k;
  uint32_t n = 0;
  int r;
  checkargs(L, 2);
  d = checkdict(L);
  if ((k = checkkey(L, 2, &kl, 1)) == NULL) return 2;
  r = shm_dict_llen(d, k, kl, &n);
  if (r == SHM_OK) {
    lua_pushinteger(L, (lua_Integer)n);
    return 1;
  }
  return nilerr(L, d, r);
}

/* ---- expiry ---- */

/* seconds as an integer when whole (ttl 2^31 prints as ngx prints it) */
static void pushseconds(lua_State *L, double s) {
  if (s == floor(s) && fabs(s) < 9007199254740992.0) lua_pushinteger(L, (lua_Integer)s);
  else lua_pushnumber(L, (lua_Number)s);
}

/***
Seconds until a key expires (millisecond resolution): `0` if it never does; an
expired key still in memory gives a negative number (as ngx).  Takes no lock.
@function dict:ttl
@tparam string key
@treturn number
@treturn[2] nil
@treturn[2] string `"not found"`
@usage local left = d:ttl("session:1")
*/
static int l_ttl(lua_State *L) {
  shm_dict *d = checkdict(L);
  size_t kl;
  const char *k = checkkey(L, 2, &kl, 0);
  double t = 0;
  int r;
  if (k == NULL) return 2;
  r = shm_dict_ttl(d, k, kl, &t);
  if (r == SHM_OK) {
    pushseconds(L, t);
    return 1;
  }
  return nilerr(L, d, r);
}

/***
Set a key's time to live (`0`: never expires).
@function dict:expire
@tparam string key
@tparam number exptime seconds
@treturn boolean true
@treturn[2] nil
@treturn[2] string `"not found"`
@usage d:expire("session:1", 60)
*/
static int l_expire(lua_State *L) {
  shm_dict *d = checkdict(L);
  size_t kl;
  const char *k;
  double t;
  int r;
  if (lua_isnoneornil(L, 3) || (lua_type(L, 3) == LUA_TBOOLEAN && !lua_toboolean(L, 3)) ||
      !lua_isnumber(L, 3))
    return luaL_error(L, "bad \"exptime\" argument");
  t = (double)lua_tonumber(L, 3);
  if ((k = checkkey(L, 2, &kl, 0)) == NULL) return 2;
  r = shm_dict_expire(d, k, kl, t);
  if (r == SHM_OK) {
    lua_pushboolean(L, 1);
    return 1;
  }
  return nilerr(L, d, r);
}

/***
Mark every item expired (`get_stale` still sees them until they are freed).
@function dict:flush_all
@usage d:flush_all()
*/
static int l_flush_all(lua_State *L) {
  shm_dict *d = checkdict(L);
  int r = shm_dict_flush_all(d);
  if (r != SHM_OK) return fail(L, d, r);
  return 0;
}

/* the optional max of flush_expired and get_keys: count checked as ngx */
static uint32_t optmax(lua_State *L, uint32_t def) {
  int top = lua_gettop(L);
  lua_Integer m;
  if (top < 1 || top > 2) luaL_error(L, "expecting 1 or 2 argument(s), but saw %d", top);
  if (top == 1) return def;
  m = luaL_checkinteger(L, 2);
  return m <= 0 ? 0 : m > (lua_Integer)UINT32_MAX ? UINT32_MAX : (uint32_t)m;
}

/***
Free expired items.
@function dict:flush_expired
@tparam[opt=0] integer max at most this many (0: all)
@treturn integer how many were freed
@usage d:flush_expired()
*/
static int l_flush_expired(lua_State *L) {
  uint32_t max = optmax(L, 0), n = 0;
  shm_dict *d = checkdict(L);
  int r = shm_dict_flush_expired(d, max, &n);
  if (r != SHM_OK) return fail(L, d, r);
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

/***
Live keys, least recently used first.  The keys are copied out under the lock
and turned into Lua strings after it is released.
@function dict:get_keys
@tparam[opt=1024] integer max at most this many (0: all)
@treturn {string,...}
@usage for _, k in ipairs(d:get_keys(0)) do print(k) end
*/
static int l_get_keys(lua_State *L) {
  uint32_t max = optmax(L, 1024), n = 0, i;
  shm_dict *d = checkdict(L);
  size_t need = 0, at = 0;
  shm_buf lent;
  int r, tries;
  for (tries = 0;; tries++) {
    char *buf = dictbuf(L, d, need);
    r = shm_dict_keys(d, max, buf, d->buf.size, &need, &n);
    if (r != SHM_DICT_BUFSMALL || tries > 16) break;
  }
  if (r != SHM_OK) return fail(L, d, r);
  take_buf(d, &lent);
  lua_createtable(L, (int)(n < 1u << 24 ? n : 1u << 24), 0);
  for (i = 0; i < n && at + 2 <= need; i++) {
    uint16_t kl;
    memcpy(&kl, lent.p + at, 2);
    if (at + 2 + kl > need) break;
    lua_pushlstring(L, lent.p + at + 2, kl);
    lua_rawseti(L, -2, (int)i + 1);
    at += 2 + (size_t)kl;
  }
  give_buf(d, &lent);
  return 1;
}

/***
The dict's size in bytes (its segment's).
@function dict:capacity
@treturn integer
@usage print(d:capacity())
*/
static int l_capacity(lua_State *L) {
  shm_dict *d = checkdict(L);
  lua_pushinteger(L, (lua_Integer)d->size);
  return 1;
}

/***
Bytes in free blocks (a new dict's figure comes back when every key is deleted).
@function dict:free_space
@treturn integer
@usage print(d:free_space())
*/
static int l_free_space(lua_State *L) {
  shm_dict *d = checkdict(L);
  lua_pushinteger(L, (lua_Integer)((uint64_t)LOAD(&d->h->free_units) << D_UNITSHIFT));
  return 1;
}

/***
Figures: `count` (live keys), `capacity`, `free` (bytes), `evicted`, `expired`
(items freed after expiring), `recovered` (locks taken over from a process that
died holding them).  It checks the whole structure first (free lists against
the free space, the LRU list against the count): an inconsistency raises
`shm.dict: corrupted dict (...)`.
@function dict:stat
@treturn table
@usage print(d:stat().count)
*/
static int l_stat(lua_State *L) {
  shm_dict *d = checkdict(L);
  dstat st;
  int r = shm_dict_stat(d, &st);
  if (r != SHM_OK) return fail(L, d, r);
  lua_createtable(L, 0, 6);
  shm_setfield_int(L, "count", (lua_Integer)st.count);
  shm_setfield_int(L, "capacity", (lua_Integer)st.capacity);
  shm_setfield_int(L, "free", (lua_Integer)st.free);
  shm_setfield_int(L, "evicted", (lua_Integer)st.evicted);
  shm_setfield_int(L, "expired", (lua_Integer)st.expired);
  shm_setfield_int(L, "recovered", (lua_Integer)st.recovered);
  return 1;
}

/***
Remove the dict's segment from the system (as `segment:remove`).
@function dict:remove
@usage d:remove()
*/
static int l_remove(lua_State *L) { return shm_inseg_call(L, DICT_MT, "remove"); }

/***
Detach the dict's segment (as `segment:detach`); `<close>` does this (Lua 5.4).
@function dict:detach
@usage d:detach()
*/
static int l_detach(lua_State *L) { return shm_inseg_call(L, DICT_MT, "detach"); }

/***
The segment the dict lives in.
@function dict:segment
@treturn segment
@usage print(d:segment():stat().nattch)
*/
static int l_segment(lua_State *L) { return shm_inseg_segment(L, DICT_MT); }

/***
How long this handle's calls wait for the writers' lock when another process
holds it (a process that died holding it is detected at once and its change
rolled back; this bounds the wait for one that is alive but stopped, e.g. by
SIGSTOP or a debugger).  Past it a call returns `nil, "timeout"` (`set` and
its kind: `false, "timeout", false`).  Readers of keys the stopped writer is
not changing never wait.  Process-local; the default is 10 seconds.
@function dict:settimeout
@tparam number|nil seconds `nil` or a negative number: wait forever
@treturn dict the dict
@usage d:settimeout(0.5)
*/
static int l_settimeout(lua_State *L) {
  shm_dict *d = checkdict(L);
  lua_Number t = luaL_optnumber(L, 2, -1);
  d->timeout = t != t || t < 0 ? -1 : (double)t;
  lua_settop(L, 1);
  return 1;
}

/* d:_wake_offset(key): the byte offset in the dict's segment of the wake
 * word for key (a 64-bit counter for seg:wait/seg:notify; shm.lock uses it) */
static int l_wake_offset(lua_State *L) {
  shm_dict *d = checkdict(L);
  size_t kl;
  const char *k = luaL_checklstring(L, 2, &kl);
  uint32_t i = dict_hash(d->seed, k, kl) % D_NWAKE;
  lua_pushinteger(L, (lua_Integer)((unsigned char *)&d->h->wake[i] - d->base));
  return 1;
}

static int l_gc(lua_State *L) {
  ldict *ld = (ldict *)luaL_checkudata(L, 1, DICT_MT);
  shm_buf_free(&ld->d.buf);
  return 0;
}

static int l_tostring(lua_State *L) { return shm_inseg_tostring(L, DICT_MT); }

/* ---- constructors ---- */

/* Call the module's function `fn` (upvalue 2) with the n values on top of
 * the stack; leaves the segment and returns 1, or leaves nil, msg, errno
 * with the message renamed to `who` and returns 0. */
static int callseg(lua_State *L, const char *fn, int n, const char *who) {
  const char *msg, *hint;
  shm_segment_call(L, fn, n, sizeof(dhdr)); /* the heap: reserved as it is used */
  if (!shm_inseg_failure(L, who)) {
    lua_pop(L, 2);
    return 1;
  }
  /* a dict's argument is its capacity: "(pass a size ...)" says so */
  msg = lua_tostring(L, -2);
  hint = msg != NULL ? strstr(msg, " (pass a size to create it)") : NULL;
  if (hint != NULL) {
    lua_pushlstring(L, msg, (size_t)(hint - msg));
    lua_pushfstring(L, "%s (pass a capacity to create it)", lua_tostring(L, -1));
    lua_replace(L, -4);
    lua_pop(L, 1);
  }
  return 0;
}

/* Memory for what dict_format writes: everything before the heap, and the
 * header of each block it carves.  0 or an errno. */
static int reserve_format(shm_segment *s, const dgeom *g) {
  uint32_t at = 0, o;
  int en = shm_segment_reserve(s, 0, g->heap_off);
  for (o = g->maxorder + 1; en == 0 && o-- > 0;)
    if (g->nunits - at >= (1u << o)) {
      en = shm_segment_reserve(s, g->heap_off + ((size_t)at << D_UNITSHIFT), 3 * sizeof(uint32_t));
      at += 1u << o;
    }
  return en;
}

/* Wrap the segment on top of the stack as a dict, formatting fresh memory
 * when `init`; waits out another process's initialisation. */
static int newdict(lua_State *L, int init, const char *who, int objidx) {
  shm_segment *s = shm_checkopen(L, -1);
  int seg = lua_gettop(L), tries;
  dhdr *h = (dhdr *)(void *)s->addr;
  const char *why = NULL;
  shm_ctx *ctx = shm_getctx(L);
  ldict *ld;
  if (s->size < sizeof(dhdr)) why = "segment too small for a dict";
  else if (s->readonly) why = "a dict needs read-write access"; /* even readers write (the lock) */
  for (tries = 0; why == NULL && LOADACQ(&h->magic) != D_MAGIC; tries++) {
    shm_deadline dl;
    int r;
    if (s->readonly || LOADACQ(&h->magic) != 0) {
      why = "not a dict (bad magic)";
      break;
    }
    /* fresh memory, or someone formatting it: the lock serialises that */
    shm_deadline_after(&dl, 10);
    r = shm_lock_acquire(&h->lock, shm_ctx_self(ctx), &dl);
    if (r == SHM_TIMEOUT) { why = "initialisation timed out"; break; }
    if (LOADACQ(&h->magic) == 0 && init) {
      unsigned char *p = s->addr + D_CACHELINE * 2; /* everything after the lock line */
      dgeom g;
      if (!geometry(s->size, &g)) {
        why = "capacity out of range";
      } else if (reserve_format(s, &g) != 0) {
        why = "no memory to format it"; /* (the tmpfs or disk is full) */
      } else {
        uint32_t seed = (uint32_t)now_ms() ^ (uint32_t)getpid() * 2654435761u;
        memset(p, 0, sizeof(dhdr) - D_CACHELINE * 2);
        dict_format(s->addr, s->size, seed);
      }
    }
    shm_lock_release(&h->lock);
    if (why != NULL || LOADACQ(&h->magic) == D_MAGIC) break;
    if (tries >= 100) { why = "not a dict (bad magic)"; break; }
    /* created, not yet formatted by its creator: give it a moment */
    shm_deadline_after(&dl, 0.01);
    shm_futex_wait(shm_futex_word((int64_t *)(void *)&h->lock.word), 0, &dl);
  }
  ld = (ldict *)lua_newuserdatauv(L, sizeof *ld, 1);
  memset(ld, 0, sizeof *ld);
  if (why == NULL) why = dict_attach(&ld->d, s->addr, s->size);
  if (why != NULL) {
    const char *obj = shm_inseg_name(L, objidx);
    lua_pushnil(L);
    lua_pushfstring(L, "%s(%s): %s", who, obj, why);
    lua_pushinteger(L, EINVAL);
    return 3;
  }
  ld->d.ctx = ctx;
  ld->d.seg = s;
  ld->d.timeout = D_TIMEOUT;
  ld->seg = s;
  luaL_setmetatable(L, DICT_MT);
  lua_pushvalue(L, seg);
  lua_setiuservalue(L, -2, 1);
  return 1;
}

/* a capacity argument, as a size the module's segment functions take */
static void checkcapacity(lua_State *L, int idx) {
  lua_Integer c = luaL_checkinteger(L, idx);
  dgeom g;
  if (c < (lua_Integer)D_MINCAP || !geometry((uint64_t)c, &g))
    luaL_argerror(L, idx, lua_pushfstring(L, "capacity out of range (%d bytes to 16 GiB)", (int)D_MINCAP));
}

/***
Make a dict in a new segment of `capacity` bytes (System V key or POSIX name, as
`shm.create`).  ngx.shared.DICT's methods, for any processes.
@function dict.create
@tparam integer|string key_or_name
@tparam integer capacity bytes (at least 16 KiB)
@tparam[opt="0600"] integer|string mode
@treturn dict
@error `nil, message, errno` (`EEXIST` if it exists)
@usage local d = assert(shm.dict.create("/cache", 16 * 1024 * 1024))
*/
static int l_create(lua_State *L) {
  lua_settop(L, 3);
  checkcapacity(L, 2);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  if (!callseg(L, "create", 3, "shm.dict.create")) return 3;
  if (newdict(L, 1, "shm.dict.create", 1) == 1) return 1;
  shm_inseg_drop(L, 4, 1); /* not made: leave nothing behind */
  return 3;
}

/***
Attach a dict; with `capacity`, a missing one is created (racing processes end
up on one dict, and one being initialised by another process is waited for).
@function dict.open
@tparam integer|string key_or_name
@tparam[opt] integer capacity
@tparam[opt="0600"] integer|string mode
@treturn dict
@error `nil, message, errno` (`ENOENT`; `EINVAL`: not a dict)
@usage local d = assert(shm.dict.open("/cache", 16 * 1024 * 1024))
*/
static int l_open(lua_State *L) {
  lua_settop(L, 3);
  if (!lua_isnil(L, 2)) checkcapacity(L, 2);
  lua_pushvalue(L, 1);
  lua_pushliteral(L, "rw");
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  if (!callseg(L, "open", 4, "shm.dict.open")) return 3;
  if (newdict(L, !lua_isnil(L, 2), "shm.dict.open", 1) == 1) return 1;
  shm_inseg_drop(L, 4, 0);
  return 3;
}

/***
A dict in a shared file map: it outlives every process (and a reboot, after
`segment:sync`).  With `capacity` the file is created (or grown) and formatted
when new.
@function dict.map
@tparam string path
@tparam[opt] integer capacity
@treturn dict
@error `nil, message, errno`
@usage local d = assert(shm.dict.map("/var/lib/app/cache.dict", 1024 * 1024))
*/
static int l_map(lua_State *L) {
  lua_settop(L, 2);
  if (!lua_isnil(L, 2)) checkcapacity(L, 2);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  if (!callseg(L, "map", 2, "shm.dict.map")) return 3;
  if (newdict(L, !lua_isnil(L, 2), "shm.dict.map", 1) == 1) return 1;
  shm_inseg_drop(L, 3, 0);
  return 3;
}

static const luaL_Reg dict_methods[] = {
  {"get", l_get},         {"get_stale", l_get_stale},   {"set", l_set},
  {"safe_set", l_safe_set}, {"add", l_add},             {"safe_add", l_safe_add},
  {"replace", l_replace}, {"delete", l_delete},         {"incr", l_incr},
  {"lpush", l_lpush},     {"rpush", l_rpush},           {"lpop", l_lpop},
  {"rpop", l_rpop},       {"llen", l_llen},             {"ttl", l_ttl},
  {"expire", l_expire},   {"flush_all", l_flush_all},   {"flush_expired", l_flush_expired},
  {"get_keys", l_get_keys}, {"capacity", l_capacity},   {"free_space", l_free_space},
  {"stat", l_stat},       {"remove", l_remove},         {"detach", l_detach},
  {"segment", l_segment}, {"cas", l_cas}, {"settimeout", l_settimeout},
  {"_wake_offset", l_wake_offset}, {NULL, NULL}};

static const luaL_Reg dict_meta[] = {
  {"__gc", l_gc}, SHM_CLOSE_ENTRY(l_detach) {"__tostring", l_tostring}, {NULL, NULL}};

static const luaL_Reg dict_funcs[] = {
  {"create", l_create}, {"open", l_open}, {"map", l_map}, {NULL, NULL}};

void shm_open_dict(lua_State *L, int module, int methods) {
  int mt;
  (void)methods;
  shm_newclass(L, DICT_MT, NULL, dict_meta);
  luaL_getmetatable(L, DICT_MT);
  mt = lua_gettop(L);
  lua_newtable(L); /* methods: upvalue 1 the metatable (the type check) */
  lua_pushvalue(L, mt);
  luaL_setfuncs(L, dict_methods, 1);
  lua_setfield(L, mt, "__index");
  lua_newtable(L); /* shm.dict: upvalues the metatable and the module */
  lua_pushvalue(L, mt);
  lua_pushvalue(L, module);
  luaL_setfuncs(L, dict_funcs, 2);
  /* where things are, for tools and specs (shm.dict.layout) */
  lua_createtable(L, 0, 8);
  shm_setfield_int(L, "lock", (lua_Integer)offsetof(dhdr, lock));
  shm_setfield_int(L, "gc_head", (lua_Integer)offsetof(dhdr, gc_head));
  shm_setfield_int(L, "nbuckets", (lua_Integer)offsetof(dhdr, nbuckets));
  shm_setfield_int(L, "count", (lua_Integer)offsetof(dhdr, count));
  shm_setfield_int(L, "lru_tail", (lua_Integer)offsetof(dhdr, lru_tail));
  shm_setfield_int(L, "freelist", (lua_Integer)offsetof(dhdr, freelist));
  shm_setfield_int(L, "jn", (lua_Integer)offsetof(dhdr, jn));
  shm_setfield_int(L, "journal", (lua_Integer)offsetof(dhdr, journal));
  shm_setfield_int(L, "heap_off", (lua_Integer)offsetof(dhdr, heap_off));
  shm_setfield_int(L, "header", (lua_Integer)HDRSIZE);
  shm_setfield_int(L, "entry", (lua_Integer)sizeof(dentry));
  shm_setfield_int(L, "unit", (lua_Integer)D_UNIT);
  lua_setfield(L, -2, "layout");
  /* for the LuaJIT FFI path: the entry points, the codes and the types */
  lua_pushlightuserdata(L, (void *)&dict_ffi);
  lua_setfield(L, -2, "_ffi");
  lua_createtable(L, 0, 24);
  shm_setfield_int(L, "OK", SHM_OK);
  shm_setfield_int(L, "CORRUPT", SHM_CORRUPT);
  shm_setfield_int(L, "TIMEOUT", SHM_TIMEOUT);
  shm_setfield_int(L, "NOTFOUND", SHM_DICT_NOTFOUND);
  shm_setfield_int(L, "EXISTS", SHM_DICT_EXISTS);
  shm_setfield_int(L, "NOMEM", SHM_DICT_NOMEM);
  shm_setfield_int(L, "NOTNUM", SHM_DICT_NOTNUM);
  shm_setfield_int(L, "NOTLIST", SHM_DICT_NOTLIST);
  shm_setfield_int(L, "ISLIST", SHM_DICT_ISLIST);
  shm_setfield_int(L, "DETACHED", FFI_DETACHED);
  shm_setfield_int(L, "OOM", FFI_NOMEM);
  shm_setfield_int(L, "NIL", DV_NIL);
  shm_setfield_int(L, "BOOL", DV_BOOL);
  shm_setfield_int(L, "NUM", DV_NUM);
  shm_setfield_int(L, "INT", DV_INT);
  shm_setfield_int(L, "STR", DV_STR);
  shm_setfield_int(L, "TABLE", DV_TABLE);
  shm_setfield_int(L, "LIST", DV_LIST);
  shm_setfield_int(L, "SET", OP_SET);
  shm_setfield_int(L, "ADD", OP_ADD);
  shm_setfield_int(L, "REPLACE", OP_REPLACE);
  lua_setfield(L, -2, "_ffi_codes");
  lua_setfield(L, module, "dict");
  lua_pop(L, 1);
}
