/*
 * shm.dict: the layout of a dict's segment (geometry, attach, format), the
 * undo journal and transactions (the lock, recovery, commits in steps, the
 * buckets' sequence words), and the buddy heap with its "to free" chain.
 * Plain C under the lock: never a lua_State.  See dict.c for the design.
 */
#include "dict.h"

/* ---- layout arithmetic and validation ---- */

static uint32_t floorlog2(uint64_t v) {
  uint32_t r = 0;
  while (v > 1) {
    v >>= 1;
    r++;
  }
  return r;
}

/* The layout for `size` bytes; 0 if it does not fit. */
int geometry(uint64_t size, dgeom *g) {
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
const char *dict_attach(shm_dict *d, unsigned char *base, size_t size) {
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
void dict_format(unsigned char *base, size_t size, uint32_t seed) {
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

/* ---- transactions: the lock, the journal, recovery ---- */

int corrupt(shm_dict *d, const char *why) {
  d->why = why;
  return SHM_CORRUPT;
}

/* Journal a word as it is, for writes made to it without the journal (a
 * fresh block's first words were its free-list links). */
static void jsave(shm_dict *d, uint32_t *p) {
  uint32_t v = LOAD(p);
  jw(d, p, v ^ 1u); /* (a change, so that it is journalled) */
  STORE(p, v);
}


/* After a journal is rolled back (or a dead owner's found empty: it died
 * inside commit), the buckets its transaction had open and that are still
 * odd go even.  The header's list is untrusted: bounded, indexes masked. */
static void settle_open(shm_dict *d) {
  uint32_t n = LOAD(&d->h->nopen), i;
  for (i = 0; i < n && i < D_MAXOPEN; i++) {
    uint32_t *q = BSEQ(d, LOAD(&d->h->open[i]));
    if (LOAD(q) & 1u) __atomic_store_n(q, LOAD(q) + 1, __ATOMIC_RELEASE);
  }
  __atomic_store_n(&d->h->nopen, 0, __ATOMIC_RELEASE);
}

/* Undo an interrupted transaction: the journal is untrusted, each entry
 * must name a word in the state, bucket, sequence, refs or heap areas.  A
 * sequence word is not put back (a reader that saw it before could not tell):
 * it goes two past its old value, even. */
static const char *rollback(shm_dict *d) {
  dhdr *h = d->h;
  uint32_t n = LOAD(&h->jn), i;
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
  /* the buckets made odd go even (bopen does not journal them): this
   * transaction's own (its list, when it is the one rolled back), then the
   * header's (a dead owner's) */
  for (i = 0; i < d->nopen; i++) {
    uint32_t *q = BSEQ(d, d->open[i]);
    if (LOAD(q) & 1u) __atomic_store_n(q, LOAD(q) + 1, __ATOMIC_RELEASE);
  }
  d->nopen = 0;
  settle_open(d);
  return NULL;
}

/* Commit a step, except that the bucket of `hash` stays odd (journalled as
 * it is, so that a rollback makes it even): its readers keep waiting
 * through the next step (a key replaced in two steps is never seen missing). */
int step_keep(shm_dict *d, uint32_t hash) {
  uint32_t b = hash & d->mask, i, kept = 0;
  if (d->overflow) return corrupt(d, d->why != NULL ? d->why : "journal overflow");
  for (i = 0; i < d->nopen; i++)
    if (d->open[i] == b) kept = 1;
  if (d->jn > 0) __atomic_store_n(&d->h->jn, 0, __ATOMIC_RELEASE);
  d->jn = 0;
  for (i = 0; i < d->nopen; i++) {
    uint32_t *q = BSEQ(d, d->open[i]);
    if (d->open[i] != b) __atomic_store_n(q, LOAD(q) + 1, __ATOMIC_RELEASE);
  }
  d->nopen = 0;
  if (kept) { /* b alone stays open */
    STORE(&d->h->open[0], b);
    d->open[d->nopen++] = b;
    __atomic_store_n(&d->h->nopen, 1, __ATOMIC_RELEASE);
    if (!jappend(d, BSEQ(d, b))) return corrupt(d, d->why);
  } else {
    __atomic_store_n(&d->h->nopen, 0, __ATOMIC_RELEASE);
  }
  return SHM_OK;
}

/* Commit one step of a long operation, unless the step went wrong: a
 * journal that overflowed (or a scribbled reference) is rolled back. */
int step(shm_dict *d) {
  if (d->overflow) return corrupt(d, d->why != NULL ? d->why : "journal overflow");
  txn_commit(d);
  return SHM_OK;
}

/* Is the journal past the point where a long operation commits a step? */
static int jfull(shm_dict *d) { return d->jn >= D_JSTEP || d->nopen >= D_MAXOPEN - 2; }

/* txn_begin (dict.h) past its fast path: take the lock unless `locked`
 * (waiting up to the handle's timeout), repairing what a dead owner left:
 * its transaction rolled back, its unfinished frees finished. */
int txn_begin_more(shm_dict *d, uint64_t self, int locked) {
  dhdr *h = d->h;
  int r = SHM_OK;
  if (!locked) {
    shm_deadline dl;
    shm_deadline_after(&dl, d->timeout < 0 ? 1e18 : d->timeout);
    r = shm_lock_acquire(&h->lock, self, &dl);
  }
  if (r == SHM_OWNERDIED) {
    const char *why = rollback(d);
    if (why != NULL) {
      shm_lock_release(&h->lock);
      return corrupt(d, why);
    }
    h->recovered++;
    r = SHM_OK;
  }
  if (r == SHM_OK && LOAD(&h->nopen) != 0) settle_open(d);
  if (r == SHM_OK && LOAD(&h->gc_head) != D_NIL && (r = gc_drain(d)) != SHM_OK) {
    if (d->jn > 0) rollback(d);
    shm_lock_release(&h->lock);
  }
  return r;
}

/* txn_end (dict.h) past its fast path. */
int txn_end_more(shm_dict *d, int r) {
  if (d->overflow && r == SHM_OK) r = corrupt(d, d->why != NULL ? d->why : "journal overflow");
  if (r == SHM_DICT_NORESERVE) r = SHM_DICT_NOMEM;
  if (r != SHM_OK) {
    /* a failed operation changes nothing (evictions were committed) */
    if (d->jn > 0) rollback(d);
    txn_commit(d); /* (buckets opened without a journal entry: even again) */
  } else {
    txn_commit(d);
    if (LOAD(&d->h->gc_head) != D_NIL) { /* what the operation set aside */
      if ((r = gc_drain(d)) != SHM_OK && d->jn > 0) rollback(d);
      txn_commit(d);
    }
  }
  shm_lock_release(&d->h->lock);
  return r;
}

/* ---- the buddy allocator (under the lock) ---- */

uint32_t order_for(size_t bytes) {
  /* the least o with D_UNIT << o >= bytes; 63 (more than any heap's
   * maxorder) for more than 2^63 */
  uint32_t o;
  if (bytes <= D_UNIT) return 0;
  if ((uint64_t)bytes > ((uint64_t)D_UNIT << 58)) return 63;
  o = 64u - (uint32_t)__builtin_clzll((unsigned long long)(bytes - 1)) - D_UNITSHIFT;
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

int balloc(shm_dict *d, size_t bytes, uint32_t kind, uint32_t *ref) {
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
    return SHM_DICT_NORESERVE;
  for (i = k; i < j; i++)
    if (shm_segment_reserve(d->seg, heapoff(d, r + (1u << i)), 3 * sizeof(uint32_t)) != 0)
      return SHM_DICT_NORESERVE;
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

int bfree(shm_dict *d, uint32_t ref) {
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

/* Set a list's element blocks aside (O(1), whatever its length): its chain
 * goes in front of the header's "to free" chain, which gc_drain frees in
 * steps once the operation has committed (or the next locker does, if this
 * process dies first). */
int park_nodes(shm_dict *d, const dview *v) {
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
int gc_drain(shm_dict *d) {
  uint32_t ref;
  dwalk w;
  walk_init(&w, d->nunits); /* (a block freed twice would be counted twice) */
  while ((ref = d->h->gc_head) != D_NIL) {
    if (!walk_ok(&w, ref) || !nodeok(d, ref)) return corrupt(d, "bad list");
    jw(d, &d->h->gc_head, nodeof(d, ref)->next);
    if (bfree(d, ref) != SHM_OK) return SHM_CORRUPT;
    if (jfull(d) && step(d) != SHM_OK) return SHM_CORRUPT;
  }
  return step(d);
}
