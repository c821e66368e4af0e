/*
 * shm.dict's parts, inside the module (see dict.c for the design):
 *   dictheap.c   the layout, the journal and transactions, the buddy heap
 *   dicttable.c  the hash table, the LRU list and every operation (the core:
 *                plain C, never a lua_State)
 *   dictval.c    values: Lua <-> bytes (tables encoded and decoded)
 *   dict.c       the Lua binding and the entry points for LuaJIT's FFI
 */
#ifndef SHM_DICT_H
#define SHM_DICT_H

#include "shm.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#pragma GCC visibility push(hidden)

#define DICT_MT "shm.dict"
#define D_MAGIC 0x314349444d48534cULL /* "LSHMDIC1" */
#define D_VERSION 3u
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
#define D_SMALLGET 256              /* a get copies a value up to this into its C stack first */
#define D_INPLACE 256u               /* a value of the same length up to this is overwritten in place */
#define D_HOT static inline __attribute__((always_inline)) /* on the hot paths */
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
  uint32_t nopen;       /* buckets the writer has open (odd), as in the handle: */
  uint32_t open[D_MAXOPEN]; /* written before they go odd, not journalled */
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
  SHM_DICT_CHANGED,  /* cas: the value is not the one expected */
  SHM_DICT_NORESERVE /* no memory behind the heap (a full tmpfs): never evicts; the
                      * caller sees SHM_DICT_NOMEM */
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
  int lent;            /* buf is lent to an FFI get until its caller calls done */
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

static inline uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/* The 1 to 7 bytes at k as one word, as memcpy into a zeroed word puts them,
 * without a memcpy of a variable length (a call): on a little-endian host two
 * overlapping loads (4 to 7 bytes) or three single bytes (1 to 3). */
D_HOT uint64_t tailword(const char *k, size_t n) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  const unsigned char *u = (const unsigned char *)k;
  if (n >= 4) {
    uint32_t a, b;
    memcpy(&a, k, 4);
    memcpy(&b, k + n - 4, 4);
    return (uint64_t)a | ((uint64_t)b << (8 * (n - 4)));
  }
  return (uint64_t)u[0] | ((uint64_t)u[n >> 1] << (8 * (n >> 1))) | ((uint64_t)u[n - 1] << (8 * (n - 1)));
#else
  uint64_t w = 0;
  memcpy(&w, k, n);
  return w;
#endif
}

/* Are the n bytes at a and b the same?  Short keys without a call: up to 16
 * bytes in two overlapping loads a side (1 to 3: three bytes). */
D_HOT int keyeq(const char *a, const char *b, size_t n) {
  if (n >= 8) {
    uint64_t x, y, x2, y2;
    if (n > 16) return memcmp(a, b, n) == 0;
    memcpy(&x, a, 8);
    memcpy(&y, b, 8);
    memcpy(&x2, a + n - 8, 8);
    memcpy(&y2, b + n - 8, 8);
    return ((x ^ y) | (x2 ^ y2)) == 0;
  }
  if (n >= 4) {
    uint32_t x, y, x2, y2;
    memcpy(&x, a, 4);
    memcpy(&y, b, 4);
    memcpy(&x2, a + n - 4, 4);
    memcpy(&y2, b + n - 4, 4);
    return ((x ^ y) | (x2 ^ y2)) == 0;
  }
  return n == 0 || (a[0] == b[0] && a[n >> 1] == b[n >> 1] && a[n - 1] == b[n - 1]);
}

/* the hash of a key: seeded, a word at a time, then a final mix */
D_HOT uint32_t dict_hash(uint32_t seed, const char *k, size_t n) {
  /* a word at a time: multiply and fold (every process on a host reads the
   * words in the same byte order) */
  uint64_t h = (uint64_t)seed ^ ((uint64_t)n * 0x9e3779b97f4a7c15ULL), w;
  for (; n >= 8; k += 8, n -= 8) {
    memcpy(&w, k, 8);
    h = (h ^ w) * 0xff51afd7ed558ccdULL;
    h ^= h >> 32;
  }
  if (n > 0) {
    w = tailword(k, n);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ULL;
  }
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 29;
  return (uint32_t)h;
}

typedef struct dgeom {
  uint32_t nbuckets, nunits, maxorder;
  uint64_t refs_off, heap_off;
} dgeom;

/* ---- refs into the heap, validated ---- */

/* A block's words.  A ref outside the heap (scribbled after it was
 * checked) points at the handle's scratch words instead: every header read
 * or write stays inside memory we own, and jw refuses to journal it. */
D_HOT uint32_t *blockw(shm_dict *d, uint32_t ref) {
  if (ref >= d->nunits) return d->scratch;
  return (uint32_t *)(void *)(d->heap + ((size_t)ref << D_UNITSHIFT));
}

/* The size in bytes of the block of `kind` at ref, read once from its header
 * and checked to lie whole, aligned, inside the heap; 0 if it is not one. */
D_HOT size_t blockbytes(shm_dict *d, uint32_t ref, uint32_t kind) {
  uint32_t w, o;
  if (ref >= d->nunits) return 0;
  w = LOAD(blockw(d, ref));
  o = BORDER(w);
  if ((w & 0xffff0000u) != B_MAGIC || BKIND(w) != kind || o > d->maxorder) return 0;
  if ((ref & ((1u << o) - 1)) != 0 || (uint64_t)ref + (1u << o) > d->nunits) return 0;
  return (size_t)D_UNIT << o;
}

/* A block of `kind` and `order` at ref, whole inside the heap. */
static inline int blockok(shm_dict *d, uint32_t ref, uint32_t kind, uint32_t order) {
  return blockbytes(d, ref, kind) == ((size_t)D_UNIT << order);
}

static inline dentry *entryof(shm_dict *d, uint32_t ref) { return (dentry *)(void *)blockw(d, ref); }
static inline dnode *nodeof(shm_dict *d, uint32_t ref) { return (dnode *)(void *)blockw(d, ref); }

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

D_HOT int viewof(shm_dict *d, uint32_t ref, dview *v) {
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

static inline int entryok(shm_dict *d, uint32_t ref) {
  dview v;
  return viewof(d, ref, &v);
}

/* A list element, read once as an entry is (its type and length). */
static inline int nodeview(shm_dict *d, uint32_t ref, uint32_t *type, uint32_t *len) {
  size_t bytes = blockbytes(d, ref, B_NODE);
  dnode *n = nodeof(d, ref);
  if (bytes == 0) return 0;
  *type = LOAD(&n->meta);
  *len = LOAD(&n->vlen);
  if (*type != DV_NUM && *type != DV_STR && *type != DV_INT) return 0;
  return sizeof(dnode) + (uint64_t)*len <= bytes;
}

static inline int nodeok(shm_dict *d, uint32_t ref) {
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

D_HOT void walk_init(dwalk *w, uint32_t limit) {
  w->saved = D_NIL;
  w->lam = 0;
  w->power = 1;
  w->steps = 0;
  w->limit = limit;
}

/* Count a step onto ref: 0 when the walk is too long or went round. */
D_HOT int walk_ok(dwalk *w, uint32_t ref) {
  if (ref == w->saved || ++w->steps > w->limit) return 0;
  if (++w->lam == w->power) {
    w->saved = ref;
    w->power = w->power < 0x80000000u ? w->power << 1 : w->power;
    w->lam = 0;
  }
  return 1;
}

enum { OP_SET = 0, OP_ADD = 1, OP_REPLACE = 2 };

typedef struct dstat {
  uint64_t count, evicted, expired, recovered, capacity, free;
} dstat;

#define MAXDEPTH 100 /* nesting of table values */

typedef struct dsrc {
  const unsigned char *p, *end;
} dsrc;

/* ---- the undo journal (under the lock; inline: every write goes through it) ---- */

/* memcpy, without a call for up to 16 bytes (overlapping copies, exactly n
 * bytes written) */
D_HOT void copysmall(void *dst, const void *src, size_t n) {
  unsigned char *o = (unsigned char *)dst;
  const unsigned char *i = (const unsigned char *)src;
  if (n > 16) {
    memcpy(o, i, n);
  } else if (n >= 8) {
    uint64_t a, b;
    memcpy(&a, i, 8);
    memcpy(&b, i + n - 8, 8);
    memcpy(o, &a, 8);
    memcpy(o + n - 8, &b, 8);
  } else if (n >= 4) {
    uint32_t a, b;
    memcpy(&a, i, 4);
    memcpy(&b, i + n - 4, 4);
    memcpy(o, &a, 4);
    memcpy(o + n - 4, &b, 4);
  } else if (n > 0) {
    unsigned char a = i[0], b = i[n >> 1], c = i[n - 1];
    o[0] = a;
    o[n >> 1] = b;
    o[n - 1] = c;
  }
}

/* Is p (4 bytes) a word a transaction may change: the guarded state in the
 * header, or the buckets, sequence words, refs and heap after it? */
static inline int jword_ok(shm_dict *d, size_t off) {
  return (off >= offsetof(dhdr, flush_gen) && off + 4 <= offsetof(dhdr, wake)) ||
         (off >= HDRSIZE && off + 4 <= d->size);
}

/* Append the word at p, as it is, to the journal: 1, or 0 (overflow set). */
static inline int jappend(shm_dict *d, uint32_t *p) {
  dhdr *h = d->h;
  uint32_t n = d->jn;
  if ((unsigned char *)p < d->base || !jword_ok(d, (size_t)((unsigned char *)p - d->base))) {
    d->overflow = 1; /* a scribbled ref led here (the scratch words) */
    d->why = "bad reference";
    return 0;
  }
  if (n >= D_JMAX) {
    d->overflow = 1;
    d->why = "journal overflow";
    return 0;
  }
  h->journal[n].word = (uint32_t)(((unsigned char *)p - d->base) >> 2);
  h->journal[n].old = *p;
  d->jn = n + 1;
  __atomic_store_n(&h->jn, n + 1, __ATOMIC_RELEASE);
  /* (the compiler must not move the caller's store to p above this) */
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  return 1;
}

/* A journalled copy of n bytes over reachable words at dst (4-aligned, the
 * words whole inside a block the caller validated): every old word saved,
 * the journal published once, then the bytes copied (readers of the bucket
 * the caller opened retry meanwhile). */
static inline void jwrite(shm_dict *d, unsigned char *dst, const void *src, size_t n) {
  dhdr *h = d->h;
  size_t words = (n + 3) / 4, i, off = (size_t)(dst - d->base);
  uint32_t jn = d->jn;
  if (n == 0) return;
  if (dst < d->base || off < HDRSIZE || off + 4 * words > d->size) {
    d->overflow = 1;
    d->why = "bad reference";
    return;
  }
  if (jn + words > D_JMAX) {
    d->overflow = 1;
    d->why = "journal overflow";
    return;
  }
  for (i = 0; i < words; i++) {
    h->journal[jn + i].word = (uint32_t)((off >> 2) + i);
    memcpy(&h->journal[jn + i].old, dst + 4 * i, 4);
  }
  d->jn = jn + (uint32_t)words;
  __atomic_store_n(&h->jn, d->jn, __ATOMIC_RELEASE);
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  copysmall(dst, src, n);
}

/* A journalled write of a word reachable in the committed state. */
static inline void jw(shm_dict *d, uint32_t *p, uint32_t v) {
  if (LOAD(p) == v) return; /* (p is in the segment or the scratch words: readable) */
  if (jappend(d, p)) STORE(p, v);
}

/* a 64-bit word, journalled as two halves */
D_HOT void jw64(shm_dict *d, uint64_t *p, uint64_t v) {
  uint32_t *w = (uint32_t *)(void *)p, lo, hi;
  memcpy(&lo, &v, 4);
  memcpy(&hi, (char *)&v + 4, 4);
  jw(d, w, lo);
  jw(d, w + 1, hi);
}

/* ---- dictheap.c: layout, journal, transactions, heap (under the lock) ---- */
int geometry(uint64_t size, dgeom *g);
const char *dict_attach(shm_dict *d, unsigned char *base, size_t size);
void dict_format(unsigned char *base, size_t size, uint32_t seed);
int corrupt(shm_dict *d, const char *why);
int step(shm_dict *d);
int step_keep(shm_dict *d, uint32_t hash);
int txn_begin_more(shm_dict *d, uint64_t self, int locked);
int txn_end_more(shm_dict *d, int r);
uint32_t order_for(size_t bytes);
int balloc(shm_dict *d, size_t bytes, uint32_t kind, uint32_t *ref);
int bfree(shm_dict *d, uint32_t ref);
int park_nodes(shm_dict *d, const dview *v);
int gc_drain(shm_dict *d);


/* ---- transactions' fast paths (inline; the rest in dictheap.c) ---- */

/* Open bucket b for change: its sequence word goes odd before anything a
 * reader of that bucket follows changes, and even again at the commit.  It
 * is not journalled: the header's list of open buckets, written first, is
 * what a rollback (or the next locker) makes even again (settle_open), two
 * past what it was.  Readers of other buckets never wait for this
 * transaction. */
D_HOT void bopen(shm_dict *d, uint32_t b) {
  uint32_t *q = BSEQ(d, b), i;
  for (i = 0; i < d->nopen; i++)
    if (d->open[i] == (b & d->mask)) return;
  if (d->nopen >= D_MAXOPEN) {
    d->overflow = 1;
    d->why = "too many buckets in one step";
    return;
  }
  /* the list of open buckets is kept in the header too, before the word goes
   * odd: recovery makes them even even when the journal is already empty (a
   * process killed inside commit) */
  STORE(&d->h->open[d->nopen], b & d->mask);
  d->open[d->nopen++] = b & d->mask;
  __atomic_store_n(&d->h->nopen, d->nopen, __ATOMIC_RELEASE);
  /* odd (a scribbled odd word stays so until the commit); the compiler keeps
   * this store after the list's and before any change it guards */
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  STORE(q, LOAD(q) | 1u);
  __atomic_thread_fence(__ATOMIC_RELEASE); /* odd before any change it guards */
}

/* Make the committed state the current one: forget the journal, then let
 * the readers of the buckets it changed in. */
D_HOT void txn_commit(shm_dict *d) {
  uint32_t i;
  if (d->jn > 0) __atomic_store_n(&d->h->jn, 0, __ATOMIC_RELEASE);
  d->jn = 0;
  for (i = 0; i < d->nopen; i++) {
    uint32_t *q = BSEQ(d, d->open[i]);
    __atomic_store_n(q, LOAD(q) + 1, __ATOMIC_RELEASE); /* even */
  }
  if (d->nopen > 0) __atomic_store_n(&d->h->nopen, 0, __ATOMIC_RELEASE);
  d->nopen = 0;
}

/* Take the lock (waiting up to the handle's timeout), repairing what a dead
 * owner left (txn_begin_more): uncontended, with nothing to repair, a CAS
 * and two loads. */
D_HOT int txn_begin(shm_dict *d) {
  dhdr *h = d->h;
  uint64_t self = shm_ctx_self(d->ctx), free = 0;
  int locked = __atomic_compare_exchange_n(&h->lock.word, &free, self, 0, __ATOMIC_ACQUIRE,
                                           __ATOMIC_RELAXED); /* no clock read for a deadline */
  d->jn = 0;
  d->nopen = 0;
  d->overflow = 0;
  d->why = NULL;
  if (locked && LOAD(&h->nopen) == 0 && LOAD(&h->gc_head) == D_NIL) return SHM_OK;
  return txn_begin_more(d, self, locked);
}

/* The one unlock path: roll back what a failed operation (or an overflowing
 * journal) changed since the last commit, or commit it and free the list
 * elements it set aside (txn_end_more); unlock.  Returns the status to
 * report. */
D_HOT int txn_end(shm_dict *d, int r) {
  if (r == SHM_OK && !d->overflow) {
    txn_commit(d);
    if (LOAD(&d->h->gc_head) == D_NIL) {
      shm_lock_release(&d->h->lock);
      return SHM_OK;
    }
  }
  return txn_end_more(d, r); /* (a second commit changes nothing) */
}

/* ---- dicttable.c: the core operations ---- */
int shm_dict_store(shm_dict *d, int op, int safe, const char *k, size_t kl,
                   const dval *v, double exptime, const dval *expect, int cmpflags,
                   int *forcible);
int shm_dict_get(shm_dict *d, const char *k, size_t kl, int stale, dval *out, char *buf,
                 size_t cap);
int shm_dict_ttl(shm_dict *d, const char *k, size_t kl, double *ttl);
int shm_dict_llen(shm_dict *d, const char *k, size_t kl, uint32_t *n);
int shm_dict_expire(shm_dict *d, const char *k, size_t kl, double exptime);
int shm_dict_incr(shm_dict *d, const char *k, size_t kl, dval *io, const dval *init,
                  double init_ttl, int *forcible);
int shm_dict_push(shm_dict *d, const char *k, size_t kl, int left, const dval *v,
                  uint32_t *n);
int shm_dict_pop(shm_dict *d, const char *k, size_t kl, int left, dval *out, char *buf,
                 size_t cap);
int shm_dict_flush_all(shm_dict *d);
int shm_dict_flush_expired(shm_dict *d, uint32_t max, uint32_t *freed);
int shm_dict_keys(shm_dict *d, uint32_t max, char *buf, size_t cap, size_t *need,
                  uint32_t *nkeys);
int shm_dict_stat(shm_dict *d, dstat *st);

/* ---- dictval.c: values (Lua <-> bytes) ---- */
int decode_table(lua_State *L, dsrc *s, int depth);
int tovalue(lua_State *L, int idx, dval *v, unsigned char *num, int list);
int sameluavalue(lua_State *L, int a, int b, int depth);

#pragma GCC visibility pop

#endif
