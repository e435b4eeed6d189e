/*
 * umbra_waku._speedups: the compact hint index and the native NotForMe fast path.
 *
 * umbra_waku/_speedups_py.py is the pure-Python twin of this module (same names, same
 * behaviour) used when this extension is not built; tests/core/test_speedups.py holds the two
 * against each other and against the full classification path.
 *
 * HintIndex: a multiset of (fingerprint, owner) pairs in an open-addressing table with linear
 * probing. A fingerprint is the first 8 bytes of a hint's digest, i.e. its first 16 hex
 * characters read as a big-endian integer; hints are keyed BLAKE2s outputs, so fingerprints are
 * uniform and need no further hashing. A fingerprint hit is only a candidate: the owner checks
 * the full hint. Fingerprints 0 and 1 mark empty and deleted slots, so they are mapped to 2 and
 * 3 (a collision the owner's check absorbs). The fingerprints live in their own array, so a
 * lookup that finds nothing reads one or two cache lines of it and nothing else.
 *
 * In front of the table sits a Bloom filter of about 10 to 20 bits per entry, three bits in one
 * 64-bit word per fingerprint: 1 MiB for 800,000 entries (100,000 conversations with a window of
 * 8), small enough to stay in this machine's caches, where the 10 MB table is not (a lookup
 * there costs a memory access, as much as the rest of the NotForMe path). About 2 % of absent
 * fingerprints pass the filter and probe the table. Removals leave the filter's bits set (a
 * filter can only err towards "maybe", never hide an entry); it is rebuilt from the table once
 * the removals since its last rebuild exceed half the entries, and with every table rebuild.
 *
 * FastPath: one call that answers "certainly NotForMe" for an envelope, or "not sure" (None),
 * in which case Session falls back to its full Python path. The scanner accepts a strict subset
 * of what upb (protobuf's parser) accepts for UmbraEnvelopeV1, so a "certainly" answer is always
 * the one the full path gives; every rule below says why it stays inside upb's acceptance.
 * FastPath.many (Session.classify_many) does the same for a batch, one envelope after the other,
 * prefetching the filter words of the envelopes a few places ahead: with a large index each
 * lookup would otherwise wait for one memory access, which a batch overlaps (see there).
 *
 * Inputs are hostile: every read is bounds-checked against the end of the buffer first.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stdint.h>
#include <string.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#define FP_EMPTY 0u
#define FP_DELETED 1u
#define HINT_CHARS 64
#define MIN_SLOTS 16
/* rebuild when live + deleted slots exceed 3/4 of the table; rebuild to a load of 5/8 */
#define MAX_LOAD_NUM 3
#define MAX_LOAD_DEN 4
#define TARGET_LOAD_NUM 5
#define TARGET_LOAD_DEN 8
/* arrays (table, filter) of at least 512 KiB are 2 MiB aligned and offered transparent huge
 * pages: with 100,000 conversations the filter is 1 MiB and the table about 10 MB, and a TLB miss
 * on top of a cache miss would cost as much as the rest of the NotForMe path */
#define HUGE_PAGE ((size_t)2 * 1024 * 1024)
#define HUGE_THRESHOLD ((size_t)512 * 1024)
#define MAX_SLOTS ((Py_ssize_t)1 << 30)

/* ---- hex ---------------------------------------------------------------------------------- */

/* value of a lowercase hex digit, 0xFF for anything else (upper case included: our hints are
 * lowercase, so an upper-case hint can never equal one of them) */
static uint8_t hexval[256];

static void
init_hexval(void)
{
    memset(hexval, 0xFF, sizeof(hexval));
    for (int c = 0; c < 10; c++) {
        hexval['0' + c] = (uint8_t)c;
    }
    for (int c = 0; c < 6; c++) {
        hexval['a' + c] = (uint8_t)(10 + c);
    }
}

/* 1 and the fingerprint in *fp if p[0..63] are lowercase hex digits, else 0 */
static int
hex_hint(const uint8_t *p, uint64_t *fp)
{
    uint8_t bad = 0;
    uint64_t value = 0;
    for (int i = 0; i < 16; i++) {
        uint8_t v = hexval[p[i]];
        bad |= v;
        value = (value << 4) | (v & 0x0F);
    }
    for (int i = 16; i < HINT_CHARS; i++) {
        bad |= hexval[p[i]];
    }
    if (bad & 0xF0) {
        return 0;
    }
    *fp = value;
    return 1;
}

static inline uint64_t
normalise(uint64_t fp)
{
    return fp < 2 ? fp + 2 : fp;
}

/* ---- HintIndex ---------------------------------------------------------------------------- */

typedef struct HintIndexObject_ {
    PyObject_HEAD
    uint64_t *fps;      /* slots fingerprints, FP_EMPTY / FP_DELETED for free slots */
    void *fps_block;    /* what was allocated for fps (fps may be aligned inside it) */
    PyObject **owners;  /* a strong reference per live slot, NULL elsewhere */
    Py_ssize_t slots;   /* 0 until the first add */
    Py_ssize_t used;    /* live entries */
    Py_ssize_t deleted; /* slots marked FP_DELETED */
    PyObject *parking;  /* None or an object with notice(fingerprint) */
    uint64_t *bloom;    /* the filter: bloom_mask + 1 words (a power of two) */
    void *bloom_block;  /* what was allocated for bloom */
    Py_ssize_t bloom_mask;
    Py_ssize_t stale;   /* removals since the filter was last rebuilt */
    /* NULL, or an index that holds one (fingerprint, tag) entry for each entry of this one:
     * several sessions' indexes mirrored into one router (HintIndex.mirror_to) */
    struct HintIndexObject_ *mirror;
    PyObject *tag; /* the owner of this index's entries in the mirror (NULL without one) */
    Py_ssize_t sources; /* indexes mirrored into this one */
} HintIndexObject;

static PyTypeObject HintIndex_Type;

/* Lemire's multiply-shift range reduction on the top 32 bits: any table size, no modulo.
 * slots < 2**31, so the product fits in 64 bits. */
static inline Py_ssize_t
home_slot(uint64_t fp, Py_ssize_t slots)
{
    return (Py_ssize_t)(((fp >> 32) * (uint64_t)slots) >> 32);
}

/* A zeroed array of n 64-bit words; *block receives what to free (PyMem_RawFree). Allocated
 * through PyMem so that tracemalloc (benchmarks/memory.py) counts it. */
static uint64_t *
alloc_words(Py_ssize_t n, void **block)
{
    size_t bytes = (size_t)n * sizeof(uint64_t);
    if (bytes < HUGE_THRESHOLD) {
        uint64_t *words = PyMem_RawCalloc((size_t)n, sizeof(uint64_t));
        *block = words;
        return words;
    }
    size_t span = (bytes + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
    char *raw = PyMem_RawMalloc(span + HUGE_PAGE);
    if (raw == NULL) {
        *block = NULL;
        return NULL;
    }
    uintptr_t aligned = ((uintptr_t)raw + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    /* advice only: failure (no THP support) leaves ordinary pages */
    (void)madvise((void *)aligned, span, MADV_HUGEPAGE);
#endif
    memset((void *)aligned, 0, bytes);
    *block = raw;
    return (uint64_t *)aligned;
}

/* the filter's word and bits for a fingerprint: the word from its low 20 bits at most, the bit
 * positions from bits 20..37, so the two never overlap */
static inline uint64_t
bloom_bits(uint64_t fp)
{
    return ((uint64_t)1 << ((fp >> 20) & 63)) | ((uint64_t)1 << ((fp >> 26) & 63)) |
           ((uint64_t)1 << ((fp >> 32) & 63));
}

/* an empty filter for a table of `slots` slots: about 8 bits per entry the table can hold
 * before it grows (3/4 of its slots), rounded up to a power of two words; NULL on no memory */
static uint64_t *
bloom_alloc(Py_ssize_t slots, Py_ssize_t *mask, void **block)
{
    Py_ssize_t words = 8;
    while (words * 64 < slots * 6 && words < ((Py_ssize_t)1 << 20)) {
        words *= 2;
    }
    *mask = words - 1;
    return alloc_words(words, block);
}

/* replace the filter by one filled from the table */
static void
bloom_install(HintIndexObject *self, uint64_t *bloom, Py_ssize_t mask, void *block)
{
    for (Py_ssize_t i = 0; i < self->slots; i++) {
        uint64_t fp = self->fps[i];
        if (fp != FP_EMPTY && fp != FP_DELETED) {
            bloom[fp & (uint64_t)mask] |= bloom_bits(fp);
        }
    }
    PyMem_RawFree(self->bloom_block);
    self->bloom = bloom;
    self->bloom_block = block;
    self->bloom_mask = mask;
    self->stale = 0;
}

/* a fresh filter without the removed entries' bits; on no memory the old one stays, which is
 * still correct (it holds every entry's bits), only less selective */
static void
bloom_refresh(HintIndexObject *self)
{
    Py_ssize_t mask;
    void *block;
    uint64_t *bloom = bloom_alloc(self->slots, &mask, &block);
    if (bloom != NULL) {
        bloom_install(self, bloom, mask, block);
    }
}

/* Move every live entry into a fresh table of new_slots (> used) slots. References move with
 * their entries, so no reference count changes. 0 on success, -1 with MemoryError. */
static int
index_rebuild(HintIndexObject *self, Py_ssize_t new_slots)
{
    if (new_slots < MIN_SLOTS) {
        new_slots = MIN_SLOTS;
    }
    if (new_slots > MAX_SLOTS || new_slots <= self->used) {
        PyErr_SetString(PyExc_MemoryError, "hint index too large");
        return -1;
    }
    void *block, *bloom_block;
    Py_ssize_t bloom_mask;
    uint64_t *fps = alloc_words(new_slots, &block);
    PyObject **owners = PyMem_Calloc((size_t)new_slots, sizeof(PyObject *));
    uint64_t *bloom = bloom_alloc(new_slots, &bloom_mask, &bloom_block);
    if (fps == NULL || owners == NULL || bloom == NULL) {
        PyMem_RawFree(block);
        PyMem_Free(owners);
        PyMem_RawFree(bloom_block);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < self->slots; i++) {
        uint64_t fp = self->fps[i];
        if (fp == FP_EMPTY || fp == FP_DELETED) {
            continue;
        }
        Py_ssize_t j = home_slot(fp, new_slots);
        while (fps[j] != FP_EMPTY) {
            if (++j == new_slots) {
                j = 0;
            }
        }
        fps[j] = fp;
        owners[j] = self->owners[i];
    }
    PyMem_RawFree(self->fps_block);
    PyMem_Free(self->owners);
    self->fps = fps;
    self->fps_block = block;
    self->owners = owners;
    self->slots = new_slots;
    self->deleted = 0;
    bloom_install(self, bloom, bloom_mask, bloom_block);
    return 0;
}

static Py_ssize_t
target_slots(Py_ssize_t live)
{
    return live / TARGET_LOAD_NUM * TARGET_LOAD_DEN + TARGET_LOAD_DEN;
}

/* the table always keeps free slots, so every probe loop below ends at an empty slot */
static int
index_reserve(HintIndexObject *self, Py_ssize_t extra)
{
    Py_ssize_t after = self->used + self->deleted + extra;
    if (self->slots > 0 && after * MAX_LOAD_DEN <= self->slots * MAX_LOAD_NUM) {
        return 0;
    }
    return index_rebuild(self, target_slots(self->used + extra));
}

/* room for `extra` more entries here and in the mirror, if any */
static int
index_reserve_both(HintIndexObject *self, Py_ssize_t extra)
{
    if (index_reserve(self, extra) < 0) {
        return -1;
    }
    return self->mirror == NULL ? 0 : index_reserve(self->mirror, extra);
}

static inline int
index_contains(const HintIndexObject *self, uint64_t fp)
{
    Py_ssize_t slots = self->slots;
    if (slots == 0) {
        return 0;
    }
    uint64_t bits = bloom_bits(fp);
    if ((self->bloom[fp & (uint64_t)self->bloom_mask] & bits) != bits) {
        return 0; /* certainly absent */
    }
    const uint64_t *fps = self->fps;
    Py_ssize_t i = home_slot(fp, slots);
    for (;;) {
        uint64_t here = fps[i];
        if (here == fp) {
            return 1;
        }
        if (here == FP_EMPTY) {
            return 0;
        }
        if (++i == slots) {
            i = 0;
        }
    }
}

/* one insertion; space must have been reserved */
static void
index_insert(HintIndexObject *self, uint64_t fp, PyObject *owner)
{
    Py_ssize_t slots = self->slots;
    Py_ssize_t i = home_slot(fp, slots);
    while (self->fps[i] != FP_EMPTY && self->fps[i] != FP_DELETED) {
        if (++i == slots) {
            i = 0;
        }
    }
    if (self->fps[i] == FP_DELETED) {
        self->deleted--;
    }
    self->fps[i] = fp;
    Py_INCREF(owner);
    self->owners[i] = owner;
    self->used++;
    self->bloom[fp & (uint64_t)self->bloom_mask] |= bloom_bits(fp);
    if (self->mirror != NULL) {
        index_insert(self->mirror, fp, self->tag);
    }
}

/* remove one (fp, owner) entry; returns the reference the table held, or NULL */
static PyObject *
index_take(HintIndexObject *self, uint64_t fp, PyObject *owner)
{
    Py_ssize_t slots = self->slots;
    if (slots == 0) {
        return NULL;
    }
    Py_ssize_t i = home_slot(fp, slots);
    for (;;) {
        uint64_t here = self->fps[i];
        if (here == FP_EMPTY) {
            return NULL;
        }
        if (here == fp && self->owners[i] == owner) {
            PyObject *held = self->owners[i];
            self->owners[i] = NULL;
            self->fps[i] = FP_DELETED;
            self->used--;
            self->deleted++;
            self->stale++;
            if (self->mirror != NULL) {
                /* the mirror's reference to the tag; this index holds one more */
                Py_XDECREF(index_take(self->mirror, fp, self->tag));
            }
            return held;
        }
        if (++i == slots) {
            i = 0;
        }
    }
}

/* shrink a mostly empty table, purge deleted slots; errors are ignored (the table stays valid) */
static void
index_maybe_shrink(HintIndexObject *self)
{
    if (self->slots > MIN_SLOTS * 4 && self->used * 8 < self->slots) {
        if (index_rebuild(self, target_slots(self->used)) < 0) {
            PyErr_Clear();
        }
    }
    else if (self->stale > self->used / 2 + 32) {
        bloom_refresh(self);
    }
    if (self->mirror != NULL) {
        index_maybe_shrink(self->mirror);
    }
}

static int
fp_from_object(PyObject *value, uint64_t *fp)
{
    unsigned long long v = PyLong_AsUnsignedLongLong(value);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        return -1;
    }
    *fp = normalise((uint64_t)v);
    return 0;
}

static int
notice(HintIndexObject *self, uint64_t raw_fp)
{
    if (self->parking == Py_None) {
        return 0;
    }
    PyObject *value = PyLong_FromUnsignedLongLong(raw_fp);
    if (value == NULL) {
        return -1;
    }
    PyObject *parking = self->parking;
    Py_INCREF(parking);
    PyObject *result = PyObject_CallMethod(parking, "notice", "O", value);
    Py_DECREF(parking);
    Py_DECREF(value);
    if (result == NULL) {
        return -1;
    }
    Py_DECREF(result);
    return 0;
}

static inline uint64_t
load_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

static PyObject *
HintIndex_new(PyTypeObject *type, PyObject *Py_UNUSED(args), PyObject *Py_UNUSED(kwargs))
{
    HintIndexObject *self = (HintIndexObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->parking = Py_NewRef(Py_None);
    return (PyObject *)self;
}

static int
HintIndex_init(HintIndexObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"parking", NULL};
    PyObject *parking = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:HintIndex", keywords, &parking)) {
        return -1;
    }
    Py_SETREF(self->parking, Py_NewRef(parking));
    return 0;
}

static int
HintIndex_traverse(HintIndexObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->parking);
    Py_VISIT((PyObject *)self->mirror);
    Py_VISIT(self->tag);
    for (Py_ssize_t i = 0; i < self->slots; i++) {
        Py_VISIT(self->owners[i]);
    }
    return 0;
}

/* take this index's entries out of `mirror`, where they are owned by `tag` */
static void
mirror_take_all(const HintIndexObject *self, HintIndexObject *mirror, PyObject *tag)
{
    for (Py_ssize_t i = 0; i < self->slots; i++) {
        uint64_t fp = self->fps[i];
        if (fp != FP_EMPTY && fp != FP_DELETED) {
            Py_XDECREF(index_take(mirror, fp, tag));
        }
    }
    index_maybe_shrink(mirror);
}

/* take this index's entries out of its mirror and forget the mirror */
static void
index_unmirror(HintIndexObject *self)
{
    HintIndexObject *mirror = self->mirror;
    PyObject *tag = self->tag;
    if (mirror == NULL) {
        return;
    }
    self->mirror = NULL;
    self->tag = NULL;
    mirror_take_all(self, mirror, tag);
    mirror->sources--;
    Py_DECREF(tag);
    Py_DECREF((PyObject *)mirror);
}

/* drop every entry; the references are released after the table is consistent again */
static void
index_drop_all(HintIndexObject *self)
{
    if (self->mirror != NULL) { /* its entries leave the mirror; the mirror stays */
        mirror_take_all(self, self->mirror, self->tag);
    }
    PyObject **owners = self->owners;
    void *block = self->fps_block;
    Py_ssize_t slots = self->slots;
    self->fps = NULL;
    self->fps_block = NULL;
    self->owners = NULL;
    self->slots = self->used = self->deleted = self->stale = 0;
    PyMem_RawFree(self->bloom_block);
    self->bloom = NULL;
    self->bloom_block = NULL;
    self->bloom_mask = 0;
    PyMem_RawFree(block);
    for (Py_ssize_t i = 0; i < slots; i++) {
        Py_XDECREF(owners[i]);
    }
    PyMem_Free(owners);
}

static int
HintIndex_clear(HintIndexObject *self)
{
    /* None, not NULL: a cleared index (garbage collection of a cycle) stays usable, empty */
    Py_XSETREF(self->parking, Py_NewRef(Py_None));
    index_unmirror(self);
    index_drop_all(self);
    return 0;
}

static void
HintIndex_dealloc(HintIndexObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    HintIndex_clear(self);
    Py_CLEAR(self->parking);
    type->tp_free((PyObject *)self);
}

static PyObject *
HintIndex_add(HintIndexObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t fp;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "add(fingerprint, owner) takes 2 arguments");
        return NULL;
    }
    unsigned long long raw = PyLong_AsUnsignedLongLong(args[0]);
    if (raw == (unsigned long long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    fp = normalise((uint64_t)raw);
    if (index_reserve_both(self, 1) < 0) {
        return NULL;
    }
    index_insert(self, fp, args[1]);
    if (notice(self, (uint64_t)raw) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static int
packed_buffer(PyObject *obj, Py_buffer *view)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    if (view->len % 8 != 0) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "packed fingerprints: a multiple of 8 bytes");
        return -1;
    }
    return 0;
}

static PyObject *
HintIndex_add_packed(HintIndexObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "add_packed(fingerprints, owner) takes 2 arguments");
        return NULL;
    }
    if (packed_buffer(args[0], &view) < 0) {
        return NULL;
    }
    Py_ssize_t count = view.len / 8;
    if (index_reserve_both(self, count) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    const uint8_t *p = view.buf;
    for (Py_ssize_t k = 0; k < count; k++) {
        index_insert(self, normalise(load_be64(p + 8 * k)), args[1]);
    }
    if (self->parking != Py_None) {
        for (Py_ssize_t k = 0; k < count; k++) {
            if (notice(self, load_be64(p + 8 * k)) < 0) {
                PyBuffer_Release(&view);
                return NULL;
            }
        }
    }
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyObject *
HintIndex_remove(HintIndexObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t fp;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "remove(fingerprint, owner) takes 2 arguments");
        return NULL;
    }
    if (fp_from_object(args[0], &fp) < 0) {
        return NULL;
    }
    PyObject *held = index_take(self, fp, args[1]);
    if (held == NULL) {
        Py_RETURN_FALSE;
    }
    index_maybe_shrink(self);
    Py_DECREF(held);
    Py_RETURN_TRUE;
}

static PyObject *
HintIndex_remove_packed(HintIndexObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "remove_packed(fingerprints, owner) takes 2 arguments");
        return NULL;
    }
    if (packed_buffer(args[0], &view) < 0) {
        return NULL;
    }
    Py_ssize_t removed = 0;
    const uint8_t *p = view.buf;
    for (Py_ssize_t k = 0; k < view.len / 8; k++) {
        PyObject *held = index_take(self, normalise(load_be64(p + 8 * k)), args[1]);
        if (held != NULL) {
            removed++;
            /* args[1] is borrowed from the caller and stays alive: drop the table's reference
             * now, it cannot be the last one */
            Py_DECREF(held);
        }
    }
    PyBuffer_Release(&view);
    index_maybe_shrink(self);
    return PyLong_FromSsize_t(removed);
}

/* the owners of the entries with fingerprint fp (normalised), as a new tuple */
static PyObject *
index_owners(HintIndexObject *self, uint64_t fp)
{
    if (!index_contains(self, fp)) {
        return PyTuple_New(0);
    }
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        return NULL;
    }
    Py_ssize_t i = home_slot(fp, self->slots);
    while (self->fps[i] != FP_EMPTY) {
        if (self->fps[i] == fp && PyList_Append(out, self->owners[i]) < 0) {
            Py_DECREF(out);
            return NULL;
        }
        if (++i == self->slots) {
            i = 0;
        }
    }
    Py_SETREF(out, PyList_AsTuple(out));
    return out;
}

static PyObject *
HintIndex_owners(HintIndexObject *self, PyObject *arg)
{
    uint64_t fp;
    if (fp_from_object(arg, &fp) < 0) {
        return NULL;
    }
    return index_owners(self, fp);
}

static PyObject *
HintIndex_mirror_to(HintIndexObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "mirror_to(index, tag) takes 2 arguments");
        return NULL;
    }
    if (args[0] == Py_None) {
        index_unmirror(self);
        Py_RETURN_NONE;
    }
    if (!PyObject_TypeCheck(args[0], &HintIndex_Type)) {
        PyErr_SetString(PyExc_TypeError, "mirror_to: the mirror must be a HintIndex or None");
        return NULL;
    }
    HintIndexObject *mirror = (HintIndexObject *)args[0];
    /* one level only: a mirror has no mirror, and an index mirrored into gets none */
    if (mirror == self || mirror->mirror != NULL || self->sources > 0) {
        PyErr_SetString(PyExc_ValueError, "mirror_to: mirrors do not chain");
        return NULL;
    }
    if (index_reserve(mirror, self->used) < 0) {
        return NULL;
    }
    index_unmirror(self);
    for (Py_ssize_t i = 0; i < self->slots; i++) {
        uint64_t fp = self->fps[i];
        if (fp != FP_EMPTY && fp != FP_DELETED) {
            index_insert(mirror, fp, args[1]);
        }
    }
    self->mirror = (HintIndexObject *)Py_NewRef((PyObject *)mirror);
    self->tag = Py_NewRef(args[1]);
    mirror->sources++;
    Py_RETURN_NONE;
}

static PyObject *HintIndex_route(HintIndexObject *self, PyObject *const *args, Py_ssize_t nargs);

static PyObject *
HintIndex_clear_method(HintIndexObject *self, PyObject *Py_UNUSED(ignored))
{
    index_drop_all(self);
    Py_RETURN_NONE;
}

static Py_ssize_t
HintIndex_len(HintIndexObject *self)
{
    return self->used;
}

static int
HintIndex_contains(HintIndexObject *self, PyObject *value)
{
    uint64_t fp;
    if (!PyLong_Check(value)) {
        return 0;
    }
    if (fp_from_object(value, &fp) < 0) {
        PyErr_Clear();
        return 0;
    }
    return index_contains(self, fp);
}

static PyObject *
HintIndex_get_capacity(HintIndexObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->slots);
}

static PyObject *
HintIndex_get_tombstones(HintIndexObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->deleted);
}

static PyObject *
HintIndex_get_parking(HintIndexObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->parking);
}

static int
HintIndex_set_parking(HintIndexObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    Py_SETREF(self->parking, Py_NewRef(value == NULL ? Py_None : value));
    return 0;
}

static PyMethodDef HintIndex_methods[] = {
    {"add", (PyCFunction)(void (*)(void))HintIndex_add, METH_FASTCALL,
     "add(fingerprint, owner): one more entry (a multiset: duplicates are kept)"},
    {"add_packed", (PyCFunction)(void (*)(void))HintIndex_add_packed, METH_FASTCALL,
     "add_packed(fingerprints, owner): add each 8-byte big-endian fingerprint of a buffer"},
    {"remove", (PyCFunction)(void (*)(void))HintIndex_remove, METH_FASTCALL,
     "remove(fingerprint, owner) -> bool: remove one entry of that owner (identity)"},
    {"remove_packed", (PyCFunction)(void (*)(void))HintIndex_remove_packed, METH_FASTCALL,
     "remove_packed(fingerprints, owner) -> int: remove one entry per packed fingerprint"},
    {"owners", (PyCFunction)HintIndex_owners, METH_O,
     "owners(fingerprint) -> tuple: the owners of the entries with that fingerprint"},
    {"clear", (PyCFunction)HintIndex_clear_method, METH_NOARGS, "remove every entry"},
    {"mirror_to", (PyCFunction)(void (*)(void))HintIndex_mirror_to, METH_FASTCALL,
     "mirror_to(index, tag): keep one (fingerprint, tag) entry in index for each entry of this "
     "one, from now on (None: stop, and take them out)"},
    {"route", (PyCFunction)(void (*)(void))HintIndex_route, METH_FASTCALL,
     "route(payloads, max_bytes) -> list: per payload, the owners of its hint's fingerprint "
     "(a tuple, empty for none) when the scanner is sure of its shape, else None"},
    {"__class_getitem__", Py_GenericAlias, METH_O | METH_CLASS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef HintIndex_getset[] = {
    {"capacity", (getter)HintIndex_get_capacity, NULL, "slots in the table", NULL},
    {"tombstones", (getter)HintIndex_get_tombstones, NULL, "deleted slots not yet reused", NULL},
    {"parking", (getter)HintIndex_get_parking, (setter)HintIndex_set_parking,
     "None, or a ParkingLot told (notice) of every fingerprint added", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods HintIndex_as_sequence = {
    .sq_length = (lenfunc)HintIndex_len,
    .sq_contains = (objobjproc)HintIndex_contains,
};

static PyTypeObject HintIndex_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "umbra_waku._speedups.HintIndex",
    .tp_doc = "fingerprint -> owners: a multiset of (fingerprint, owner) entries",
    .tp_basicsize = sizeof(HintIndexObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = HintIndex_new,
    .tp_init = (initproc)HintIndex_init,
    .tp_dealloc = (destructor)HintIndex_dealloc,
    .tp_traverse = (traverseproc)HintIndex_traverse,
    .tp_clear = (inquiry)HintIndex_clear,
    .tp_methods = HintIndex_methods,
    .tp_getset = HintIndex_getset,
    .tp_as_sequence = &HintIndex_as_sequence,
};

/* ---- the envelope scanner ----------------------------------------------------------------- */

/*
 * The scanner accepts an UmbraEnvelopeV1 (proto/umbra_envelope.proto) only in this shape:
 *
 *   field 1 (conversation_hint), then optionally field 2 (salt), then field 10 (encrypted_bytes),
 *   each at most once and in that order; nothing else.
 *
 * Why each rule keeps us inside upb's acceptance (so a "sure" answer is never given to bytes the
 * full path would call BadlyFormed, or read differently):
 * - tags are single bytes (< 0x80): field numbers 1..15 always encode so; a multi-byte tag, even a
 *   valid one, is "not sure";
 * - field numbers strictly increase: no repeated field (upb would keep the last value of a
 *   scalar and merge repeated sub-messages), no unknown field, no field 0 (a parse error);
 * - wire types are exactly the schema's (2 for strings, bytes and messages, 0 for uint32):
 *   upb treats another wire type as an unknown field, and groups (3, 4) as errors or unknown;
 * - varints are minimal and short: a length has at most 3 bytes (150,000 < 2**21), the salt at
 *   most 5 bytes with a value below 2**32; upb accepts longer, non-minimal encodings and keeps
 *   the low 32 bits of larger salts, which we leave to it (it reads minimal short varints as we
 *   do);
 * - a length never goes past the end of its enclosing message (upb: "truncated");
 * - the hint is exactly 64 lowercase hex digits, hence valid UTF-8 (upb validates proto3
 *   strings) and a 64-character str after parsing;
 * - encrypted_bytes holds exactly one member of its oneof (1 bytes, 2 Plaintext, 3 Ecies,
 *   4 Ratchet) and every sub-message is scanned with the same rules against its own schema, since
 *   upb parses sub-messages eagerly and would reject a malformed one.
 */

/* minimal varint of at most max_bytes; 0 when not in that form or truncated */
static inline int
read_varint(const uint8_t **pp, const uint8_t *end, int max_bytes, uint64_t *out)
{
    const uint8_t *p = *pp;
    uint64_t value = 0;
    for (int i = 0; i < max_bytes; i++) {
        if (p >= end) {
            return 0; /* truncated */
        }
        uint8_t byte = *p++;
        value |= (uint64_t)(byte & 0x7F) << (7 * i);
        if (byte < 0x80) {
            if (i > 0 && byte == 0) {
                return 0; /* non-minimal: a trailing zero group */
            }
            *pp = p;
            *out = value;
            return 1;
        }
    }
    return 0; /* longer than max_bytes */
}

/* a length prefix and the bytes it covers inside [*pp, end); sets *body and *body_end */
static inline int
read_length_delimited(const uint8_t **pp, const uint8_t *end, const uint8_t **body,
                      const uint8_t **body_end)
{
    uint64_t length;
    if (!read_varint(pp, end, 3, &length)) {
        return 0;
    }
    if (length > (uint64_t)(end - *pp)) {
        return 0; /* runs past the enclosing message */
    }
    *body = *pp;
    *body_end = *pp + length;
    *pp = *body_end;
    return 1;
}

/* a message all of whose fields are `bytes`, numbered 1..max_field: Plaintext (1), Ecies (3),
 * Ratchet (2). bytes fields need no validation in upb. */
static int
scan_bytes_message(const uint8_t *p, const uint8_t *end, int max_field)
{
    int last = 0;
    while (p < end) {
        uint8_t tag = *p++;
        int field = tag >> 3;
        if (tag >= 0x80 || (tag & 7) != 2 || field <= last || field > max_field) {
            return 0;
        }
        last = field;
        const uint8_t *body, *body_end;
        if (!read_length_delimited(&p, end, &body, &body_end)) {
            return 0;
        }
    }
    return 1;
}

/* EncryptedBytes: exactly one oneof member */
static int
scan_encrypted(const uint8_t *p, const uint8_t *end)
{
    if (p >= end) {
        return 0; /* empty: valid for upb, but unusual: leave it to the full path */
    }
    uint8_t tag = *p++;
    int field = tag >> 3;
    if (tag >= 0x80 || (tag & 7) != 2 || field < 1 || field > 4) {
        return 0;
    }
    const uint8_t *body, *body_end;
    if (!read_length_delimited(&p, end, &body, &body_end) || p != end) {
        return 0; /* truncated, or more than one field */
    }
    switch (field) {
    case 1:
        return 1; /* bytes encrypted_bytes */
    case 2:
        return scan_bytes_message(body, body_end, 1); /* Plaintext { bytes payload = 1; } */
    case 3:
        return scan_bytes_message(body, body_end, 3); /* Ecies { bytes 1, 2, 3 } */
    default:
        return scan_bytes_message(body, body_end, 2); /* Ratchet { bytes 1, 2 } */
    }
}

typedef struct {
    const uint8_t *hint; /* 64 lowercase hex digits */
    uint64_t fp;         /* raw fingerprint (not normalised) */
    uint32_t salt;
} Scanned;

/* 1 when data is an UmbraEnvelopeV1 of the shape above, else 0 ("not sure") */
static int
scan_envelope(const uint8_t *p, Py_ssize_t length, Scanned *out)
{
    const uint8_t *end = p + length;
    const uint8_t *hint = NULL;
    int have_encrypted = 0;
    int last = 0;
    uint32_t salt = 0; /* proto3 default when field 2 is absent */
    while (p < end) {
        uint8_t tag = *p++;
        int field = tag >> 3;
        int wire_type = tag & 7;
        if (tag >= 0x80 || field <= last) {
            return 0;
        }
        last = field;
        const uint8_t *body, *body_end;
        uint64_t value;
        switch (field) {
        case 1: /* string conversation_hint */
            if (wire_type != 2 || !read_length_delimited(&p, end, &body, &body_end) ||
                body_end - body != HINT_CHARS || !hex_hint(body, &out->fp)) {
                return 0;
            }
            hint = body;
            break;
        case 2: /* uint32 salt */
            if (wire_type != 0 || !read_varint(&p, end, 5, &value) || value > 0xFFFFFFFFu) {
                return 0;
            }
            salt = (uint32_t)value;
            break;
        case 10: /* EncryptedBytes encrypted_bytes */
            if (wire_type != 2 || !read_length_delimited(&p, end, &body, &body_end) ||
                !scan_encrypted(body, body_end)) {
                return 0;
            }
            have_encrypted = 1;
            break;
        default:
            return 0;
        }
    }
    if (hint == NULL || !have_encrypted) {
        return 0; /* the full path reports these as BadlyFormed */
    }
    out->hint = hint;
    out->salt = salt;
    return 1;
}

static PyObject *
hint_str(const uint8_t *hint)
{
    PyObject *text = PyUnicode_New(HINT_CHARS, 127);
    if (text != NULL) {
        memcpy(PyUnicode_1BYTE_DATA(text), hint, HINT_CHARS);
    }
    return text;
}

/* ---- FastPath ----------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    HintIndexObject *index;  /* the conversations' expected hints */
    HintIndexObject *recent; /* the replay memory's hints */
    PyObject *inbox_topic;   /* str */
    PyTypeObject *result_type;
    PyObject *fallback;      /* called with (data, content_topic) when not sure */
    Py_ssize_t hint_offset;  /* where result_type keeps its `hint` and `salt` slots */
    Py_ssize_t salt_offset;
    Py_ssize_t max_bytes;
} FastPathObject;

static PyTypeObject FastPath_Type;

/* the offset of a writable object slot (a __slots__ member) of type, or -1 with an error */
static Py_ssize_t
slot_offset(PyTypeObject *type, const char *name)
{
    PyObject *descr = PyDict_GetItemString(type->tp_dict, name);
    if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a __slots__ member", type->tp_name, name);
        return -1;
    }
    PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
    if (member->type != T_OBJECT_EX || (member->flags & READONLY) ||
        member->offset < (Py_ssize_t)sizeof(PyObject) || member->offset >= type->tp_basicsize) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a writable object slot", type->tp_name, name);
        return -1;
    }
    return member->offset;
}

/* 1 when the fast path may answer for envelopes on this topic, else 0: the inbox check needs a
 * BLAKE2s of the salt, so only a topic given (an exact str) that is not our inbox skips it.
 * The caller has checked that self is not cleared. */
static int
topic_allows(FastPathObject *self, PyObject *topic)
{
    if (topic == Py_None || !PyUnicode_CheckExact(topic) || topic == self->inbox_topic) {
        return 0;
    }
    int same = PyUnicode_Compare(topic, self->inbox_topic);
    if (same == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return same != 0;
}

/* The NotForMe answer for data on a topic topic_allows, a new reference; NULL without an error
 * when not sure. Any error on the way (memory) is cleared and reported as "not sure": the full
 * path decides. */
static PyObject *
notforme_data(FastPathObject *self, PyObject *data)
{
    if (self->index == NULL || !PyBytes_CheckExact(data)) {
        return NULL; /* index NULL: cleared by the garbage collector (a cycle being broken) */
    }
    const uint8_t *bytes = (const uint8_t *)PyBytes_AS_STRING(data);
    Py_ssize_t length = PyBytes_GET_SIZE(data);
    Scanned scanned;
    if (length > self->max_bytes || !scan_envelope(bytes, length, &scanned)) {
        return NULL;
    }
    uint64_t fp = normalise(scanned.fp);
    if (index_contains(self->index, fp) || index_contains(self->recent, fp)) {
        return NULL; /* a candidate: the full path checks the whole hint */
    }
    PyObject *hint = hint_str(scanned.hint);
    PyObject *salt = hint == NULL ? NULL : PyLong_FromUnsignedLong(scanned.salt);
    PyObject *result = salt == NULL ? NULL : self->result_type->tp_alloc(self->result_type, 0);
    if (result == NULL) {
        Py_XDECREF(hint);
        Py_XDECREF(salt);
        PyErr_Clear();
        return NULL;
    }
    *(PyObject **)((char *)result + self->hint_offset) = hint;
    *(PyObject **)((char *)result + self->salt_offset) = salt;
    return result;
}

/* notforme_data for any topic */
static PyObject *
fast_notforme(FastPathObject *self, PyObject *data, PyObject *topic)
{
    if (self->index == NULL || !topic_allows(self, topic)) {
        return NULL;
    }
    return notforme_data(self, data);
}

static PyObject *
FastPath_vectorcall(FastPathObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *data = NULL, *topic = Py_None;
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    if (nargs >= 1) {
        data = args[0];
    }
    if (nargs >= 2) {
        topic = args[1];
    }
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, k);
        if (nargs < 2 && PyUnicode_Check(name) &&
            PyUnicode_CompareWithASCIIString(name, "content_topic") == 0) {
            topic = args[nargs + k];
        }
        else if (nargs < 1 && PyUnicode_Check(name) &&
                 PyUnicode_CompareWithASCIIString(name, "data") == 0) {
            data = args[nargs + k];
        }
        else {
            data = NULL; /* let the fallback raise its own TypeError */
            break;
        }
    }
    if (data != NULL && nargs <= 2) {
        PyObject *result = fast_notforme(self, data, topic);
        if (result != NULL) {
            return result;
        }
    }
    if (self->fallback == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "FastPath used after it was cleared");
        return NULL;
    }
    return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
}

static PyObject *
FastPath_notforme(FastPathObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "notforme(data, content_topic) takes 2 arguments");
        return NULL;
    }
    PyObject *result = fast_notforme(self, args[0], args[1]);
    if (result == NULL) {
        Py_RETURN_NONE;
    }
    return result;
}

/* ---- FastPath.many: a batch, with the index's memory latency overlapped ---------------------
 *
 * With 100,000 conversations the filter (1 MiB) and the table (10 MB) do not stay in this
 * machine's caches between envelopes, so a single lookup waits for one memory access, as long as
 * the whole NotForMe path. A batch knows its next envelopes: while envelope i is classified, the
 * filter words of envelope i + MANY_AHEAD are requested (__builtin_prefetch), so that their
 * memory accesses overlap one another and the work in between. Only memory reads run ahead: each
 * envelope is still classified, natively or by the fallback, after the previous one's state
 * changes, exactly as one call per envelope would.
 */

/* envelopes between the prefetch of an envelope's filter words and its lookup: several memory
 * latencies' worth of fast-path work (0.12 us an envelope against about 0.13 us a miss), few
 * requests in flight. Measured (docs/performance.md, section 1): 4, 8, 16 and 32 all hide the
 * miss; the larger ones cost a little more with a small index (more prefetched lines held) */
#ifndef MANY_AHEAD
#define MANY_AHEAD 8
#endif

#ifndef PREFETCH
#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(address) __builtin_prefetch((address), 0, 3)
#else
#define PREFETCH(address) ((void)(address))
#endif
#endif

/* The fingerprint of an envelope's hint if the envelope starts the usual way (field 1, length
 * 64), in *fp: a guess from the first bytes alone (the 16 characters are taken as hex digits
 * without checking them). It only chooses addresses to prefetch; every decision is the
 * scanner's. 0 when the data does not start so. */
static inline int
peek_fingerprint(PyObject *data, uint64_t *fp)
{
    if (!PyBytes_CheckExact(data) || PyBytes_GET_SIZE(data) < 2 + 16) {
        return 0;
    }
    const uint8_t *p = (const uint8_t *)PyBytes_AS_STRING(data);
    if (p[0] != 0x0A || p[1] != HINT_CHARS) {
        return 0;
    }
    uint64_t value = 0;
    for (int i = 0; i < 16; i++) {
        value = (value << 4) | (hexval[p[2 + i]] & 0x0F);
    }
    *fp = normalise(value);
    return 1;
}

/* The prefetches are statements of FastPath_many itself, not of helper functions: GCC deems a
 * function whose only effect is __builtin_prefetch pure, and drops the calls to it (it did).
 * The table is not prefetched: only the 2 % of absent fingerprints that pass the filter read
 * it, and a second prefetch per envelope would double the requests in flight for them. */

/* the start of an object that may be an envelope, from its address alone: its header and the
 * bytes peek_fingerprint reads (a bytes object's data follows its 32-byte header, and pymalloc
 * aligns objects to 16 bytes, so those may straddle two lines). Nothing is read. */
#define PREFETCH_OBJECT(object)                                                                \
    do {                                                                                       \
        uintptr_t start_ = (uintptr_t)(object);                                                \
        PREFETCH((const void *)start_);                                                        \
        PREFETCH((const void *)(start_ + offsetof(PyBytesObject, ob_sval) + 2 + 16 - 1));     \
    } while (0)

/* the filter words the lookups of an envelope's fingerprint will read (index not cleared) */
#define PREFETCH_FILTERS(self, object)                                                         \
    do {                                                                                       \
        uint64_t fp_;                                                                          \
        if (peek_fingerprint((object), &fp_)) {                                                \
            const HintIndexObject *index_ = (self)->index, *recent_ = (self)->recent;          \
            if (index_->slots > 0) {                                                           \
                PREFETCH(&index_->bloom[fp_ & (uint64_t)index_->bloom_mask]);                  \
            }                                                                                  \
            if (recent_->slots > 0) {                                                          \
                PREFETCH(&recent_->bloom[fp_ & (uint64_t)recent_->bloom_mask]);                \
            }                                                                                  \
        }                                                                                      \
    } while (0)

static PyObject *
FastPath_many(FastPathObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"payloads", "content_topic", NULL};
    PyObject *payloads, *topic = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|O:many", keywords, &payloads, &topic)) {
        return NULL;
    }
    if (PyBytes_Check(payloads) || PyByteArray_Check(payloads) || PyUnicode_Check(payloads) ||
        PyMemoryView_Check(payloads)) {
        PyErr_SetString(PyExc_TypeError, "many() takes a sequence of payloads, not one payload");
        return NULL;
    }
    /* the items as they are now, each held until the end: a fallback that changes the caller's
     * list (or drops its references) changes nothing here */
    PyObject *batch = PySequence_Tuple(payloads);
    if (batch == NULL) {
        return NULL;
    }
    Py_INCREF(topic); /* held as well, whatever the fallback does to the caller's objects */
    Py_ssize_t count = PyTuple_GET_SIZE(batch);
    PyObject **items = PySequence_Fast_ITEMS(batch);
    /* filled by appending: a list with NULL items must not be seen by Python code, and the
     * fallback is Python code (gc.get_objects() would find it) */
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        goto error;
    }
    /* the topic is the batch's: whether the fast path may answer is decided once */
    int fast = self->index != NULL && topic_allows(self, topic);
    /* two stages: the envelope's first bytes 2 * MANY_AHEAD places ahead (in a large batch they
     * may be out of the caches too, and the second stage reads them), then its filter words
     * MANY_AHEAD places ahead */
    if (fast) {
        for (Py_ssize_t k = 0; k < count && k < 2 * MANY_AHEAD; k++) {
            PREFETCH_OBJECT(items[k]);
        }
        for (Py_ssize_t k = 0; k < count && k < MANY_AHEAD; k++) {
            PREFETCH_FILTERS(self, items[k]);
        }
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *result = NULL;
        if (fast && self->index != NULL) {
            if (i + 2 * MANY_AHEAD < count) {
                PREFETCH_OBJECT(items[i + 2 * MANY_AHEAD]);
            }
            if (i + MANY_AHEAD < count) {
                PREFETCH_FILTERS(self, items[i + MANY_AHEAD]);
            }
            result = notforme_data(self, items[i]);
        }
        if (result == NULL) {
            if (self->fallback == NULL) {
                PyErr_SetString(PyExc_RuntimeError, "FastPath used after it was cleared");
                goto error;
            }
            PyObject *fallback = Py_NewRef(self->fallback);
            PyObject *call[2] = {items[i], topic};
            result = PyObject_Vectorcall(fallback, call, 2, NULL);
            Py_DECREF(fallback);
            if (result == NULL) {
                goto error;
            }
        }
        int appended = PyList_Append(out, result);
        Py_DECREF(result);
        if (appended < 0) {
            goto error;
        }
    }
    Py_DECREF(topic);
    Py_DECREF(batch);
    return out;

error:
    Py_XDECREF(out);
    Py_DECREF(topic);
    Py_DECREF(batch);
    return NULL;
}

static PyObject *
FastPath_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"index", "recent", "inbox_topic", "result_type", "max_bytes",
                               "fallback", NULL};
    PyObject *index, *recent, *inbox_topic, *result_type, *fallback;
    Py_ssize_t max_bytes;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O!UO!nO:FastPath", keywords,
                                     &HintIndex_Type, &index, &HintIndex_Type, &recent,
                                     &inbox_topic, &PyType_Type, &result_type, &max_bytes,
                                     &fallback)) {
        return NULL;
    }
    if (!PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_TypeError, "fallback must be callable");
        return NULL;
    }
    PyTypeObject *rtype = (PyTypeObject *)result_type;
    Py_ssize_t hint_offset = slot_offset(rtype, "hint");
    if (hint_offset < 0) {
        return NULL;
    }
    Py_ssize_t salt_offset = slot_offset(rtype, "salt");
    if (salt_offset < 0) {
        return NULL;
    }
    FastPathObject *self = (FastPathObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = (vectorcallfunc)FastPath_vectorcall;
    self->index = (HintIndexObject *)Py_NewRef(index);
    self->recent = (HintIndexObject *)Py_NewRef(recent);
    self->inbox_topic = Py_NewRef(inbox_topic);
    self->result_type = (PyTypeObject *)Py_NewRef(result_type);
    self->fallback = Py_NewRef(fallback);
    self->hint_offset = hint_offset;
    self->salt_offset = salt_offset;
    self->max_bytes = max_bytes;
    return (PyObject *)self;
}

static int
FastPath_traverse(FastPathObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->index);
    Py_VISIT(self->recent);
    Py_VISIT(self->inbox_topic);
    Py_VISIT(self->result_type);
    Py_VISIT(self->fallback);
    return 0;
}

static int
FastPath_clear(FastPathObject *self)
{
    Py_CLEAR(self->index);
    Py_CLEAR(self->recent);
    Py_CLEAR(self->inbox_topic);
    Py_CLEAR(self->result_type);
    Py_CLEAR(self->fallback);
    return 0;
}

static void
FastPath_dealloc(FastPathObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    FastPath_clear(self);
    type->tp_free((PyObject *)self);
}

static PyObject *
FastPath_call(PyObject *self, PyObject *args, PyObject *kwargs)
{
    return PyVectorcall_Call(self, args, kwargs);
}

static PyMethodDef FastPath_methods[] = {
    {"notforme", (PyCFunction)(void (*)(void))FastPath_notforme, METH_FASTCALL,
     "notforme(data, content_topic): the NotForMe result when certain, else None"},
    {"many", (PyCFunction)(void (*)(void))FastPath_many, METH_VARARGS | METH_KEYWORDS,
     "many(payloads, content_topic=None) -> list: [self(data, content_topic) for data in "
     "payloads], each envelope classified after the previous one's state changes, with the "
     "index's memory reads of the next envelopes prefetched"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FastPath_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "umbra_waku._speedups.FastPath",
    .tp_doc = "FastPath(index, recent, inbox_topic, result_type, max_bytes, fallback): call it "
              "with (data, content_topic=None); answers NotForMe natively when certain, else "
              "returns fallback(data, content_topic)",
    .tp_basicsize = sizeof(FastPathObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(FastPathObject, vectorcall),
    .tp_call = FastPath_call,
    .tp_new = FastPath_new,
    .tp_dealloc = (destructor)FastPath_dealloc,
    .tp_traverse = (traverseproc)FastPath_traverse,
    .tp_clear = (inquiry)FastPath_clear,
    .tp_methods = FastPath_methods,
};

/* ---- keyed BLAKE2s-256 of a counter (the PrivateV1 hints, docs/protocol.md section 5.2) ----- */

/*
 * private_hint(hint_key, g) = hex(BLAKE2s-256 keyed with the 32-byte hint_key, of u64(g)):
 * RFC 7693 with nn = 32, kk = 32, one key block and one 8-byte data block. Written out here
 * because hashlib spends most of a microsecond in object and argument handling around the two
 * compressions this takes, and every PrivateV1 message read needs two of these hints (one to
 * check a fingerprint match, one for the window's new counter). tests/core/test_speedups.py
 * checks it against hashlib.
 */

static const uint32_t blake2s_iv[8] = {
    0x6A09E667u, 0xBB67AE85u, 0x3C6EF372u, 0xA54FF53Au,
    0x510E527Fu, 0x9B05688Cu, 0x1F83D9ABu, 0x5BE0CD19u,
};

static const uint8_t blake2s_sigma[10][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
};

static inline uint32_t
rotr32(uint32_t x, int n)
{
    return (x >> n) | (x << (32 - n));
}

static inline uint32_t
load_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

#define B2S_G(a, b, c, d, x, y)          \
    do {                                 \
        v[a] = v[a] + v[b] + (x);        \
        v[d] = rotr32(v[d] ^ v[a], 16);  \
        v[c] = v[c] + v[d];              \
        v[b] = rotr32(v[b] ^ v[c], 12);  \
        v[a] = v[a] + v[b] + (y);        \
        v[d] = rotr32(v[d] ^ v[a], 8);   \
        v[c] = v[c] + v[d];              \
        v[b] = rotr32(v[b] ^ v[c], 7);   \
    } while (0)

/* RFC 7693 section 3.2, F: one 64-byte block, t the byte count so far (< 2**32 here) */
static void
blake2s_compress(uint32_t h[8], const uint8_t block[64], uint32_t t, int last)
{
    uint32_t m[16], v[16];
    for (int i = 0; i < 16; i++) {
        m[i] = load_le32(block + 4 * i);
    }
    for (int i = 0; i < 8; i++) {
        v[i] = h[i];
        v[i + 8] = blake2s_iv[i];
    }
    v[12] ^= t;
    if (last) {
        v[14] = ~v[14];
    }
    for (int r = 0; r < 10; r++) {
        const uint8_t *s = blake2s_sigma[r];
        B2S_G(0, 4, 8, 12, m[s[0]], m[s[1]]);
        B2S_G(1, 5, 9, 13, m[s[2]], m[s[3]]);
        B2S_G(2, 6, 10, 14, m[s[4]], m[s[5]]);
        B2S_G(3, 7, 11, 15, m[s[6]], m[s[7]]);
        B2S_G(0, 5, 10, 15, m[s[8]], m[s[9]]);
        B2S_G(1, 6, 11, 12, m[s[10]], m[s[11]]);
        B2S_G(2, 7, 8, 13, m[s[12]], m[s[13]]);
        B2S_G(3, 4, 9, 14, m[s[14]], m[s[15]]);
    }
    for (int i = 0; i < 8; i++) {
        h[i] ^= v[i] ^ v[i + 8];
    }
}

/* the keyed state after the key block (reused for every counter of one key) */
static void
blake2s_keyed_init(uint32_t h[8], const uint8_t key[32])
{
    uint8_t block[64];
    for (int i = 0; i < 8; i++) {
        h[i] = blake2s_iv[i];
    }
    h[0] ^= 0x01010000u ^ (32u << 8) ^ 32u; /* depth 1, fanout 1, key length 32, digest 32 */
    memset(block, 0, sizeof(block));
    memcpy(block, key, 32);
    blake2s_compress(h, block, 64, 0);
}

/* the 32-byte digest of u64(counter) big-endian, from a keyed state */
static void
blake2s_counter(const uint32_t keyed[8], uint64_t counter, uint8_t out[32])
{
    uint32_t h[8];
    uint8_t block[64];
    memcpy(h, keyed, sizeof(h));
    memset(block, 0, sizeof(block));
    for (int i = 0; i < 8; i++) {
        block[i] = (uint8_t)(counter >> (56 - 8 * i));
    }
    blake2s_compress(h, block, 64 + 8, 1);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)h[i];
        out[4 * i + 1] = (uint8_t)(h[i] >> 8);
        out[4 * i + 2] = (uint8_t)(h[i] >> 16);
        out[4 * i + 3] = (uint8_t)(h[i] >> 24);
    }
}

/* a 32-byte key and an unsigned 64-bit counter from Python arguments; -1 with an error */
static int
hint_arguments(PyObject *key_obj, PyObject *counter_obj, const char *name, uint32_t keyed[8],
               uint64_t *counter)
{
    if (!PyBytes_Check(key_obj) || PyBytes_GET_SIZE(key_obj) != 32) {
        PyErr_Format(PyExc_ValueError, "%s: the hint key is 32 bytes", name);
        return -1;
    }
    unsigned long long value = PyLong_AsUnsignedLongLong(counter_obj);
    if (value == (unsigned long long)-1 && PyErr_Occurred()) {
        return -1;
    }
    *counter = (uint64_t)value;
    blake2s_keyed_init(keyed, (const uint8_t *)PyBytes_AS_STRING(key_obj));
    return 0;
}

static PyObject *
speedups_private_hint(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    static const char digits[] = "0123456789abcdef";
    uint32_t keyed[8];
    uint64_t counter;
    uint8_t digest[32];
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "private_hint(hint_key, counter) takes 2 arguments");
        return NULL;
    }
    if (hint_arguments(args[0], args[1], "private_hint", keyed, &counter) < 0) {
        return NULL;
    }
    blake2s_counter(keyed, counter, digest);
    PyObject *text = PyUnicode_New(HINT_CHARS, 127);
    if (text == NULL) {
        return NULL;
    }
    Py_UCS1 *chars = PyUnicode_1BYTE_DATA(text);
    for (int i = 0; i < 32; i++) {
        chars[2 * i] = (Py_UCS1)digits[digest[i] >> 4];
        chars[2 * i + 1] = (Py_UCS1)digits[digest[i] & 0x0F];
    }
    return text;
}

static PyObject *
speedups_private_fingerprints(PyObject *Py_UNUSED(module), PyObject *const *args,
                              Py_ssize_t nargs)
{
    uint32_t keyed[8];
    uint64_t first;
    uint8_t digest[32];
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError,
                        "private_fingerprints(hint_key, first, count) takes 3 arguments");
        return NULL;
    }
    Py_ssize_t count = PyLong_AsSsize_t(args[2]);
    if (count == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (count < 0 || count > (1 << 20)) {
        PyErr_SetString(PyExc_ValueError, "private_fingerprints: count out of range");
        return NULL;
    }
    if (hint_arguments(args[0], args[1], "private_fingerprints", keyed, &first) < 0) {
        return NULL;
    }
    if (count > 0 && first + (uint64_t)(count - 1) < first) {
        PyErr_SetString(PyExc_OverflowError, "private_fingerprints: counters past 2**64");
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, 8 * count);
    if (out == NULL) {
        return NULL;
    }
    uint8_t *p = (uint8_t *)PyBytes_AS_STRING(out);
    for (Py_ssize_t k = 0; k < count; k++) {
        blake2s_counter(keyed, first + (uint64_t)k, digest);
        memcpy(p + 8 * k, digest, 8);
    }
    return out;
}

/* ---- module functions --------------------------------------------------------------------- */

static PyObject *
speedups_fingerprint(PyObject *Py_UNUSED(module), PyObject *hint)
{
    if (!PyUnicode_Check(hint)) {
        PyErr_SetString(PyExc_TypeError, "fingerprint() takes a str");
        return NULL;
    }
    uint64_t fp;
    if (PyUnicode_GET_LENGTH(hint) != HINT_CHARS || !PyUnicode_IS_ASCII(hint) ||
        !hex_hint(PyUnicode_1BYTE_DATA(hint), &fp)) {
        Py_RETURN_NONE;
    }
    return PyLong_FromUnsignedLongLong(fp);
}

static PyObject *
speedups_scan_envelope(PyObject *Py_UNUSED(module), PyObject *data)
{
    Py_buffer view;
    Scanned scanned;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    int sure = scan_envelope(view.buf, view.len, &scanned);
    PyBuffer_Release(&view);
    if (!sure) {
        Py_RETURN_NONE;
    }
    PyObject *hint = hint_str(scanned.hint);
    if (hint == NULL) {
        return NULL;
    }
    return Py_BuildValue("(Nk)", hint, (unsigned long)scanned.salt);
}

/* HintIndex.route: for each payload, the owners of its hint's fingerprint when the scanner is
 * sure of the envelope (the conditions under which FastPath answers NotForMe when the
 * fingerprint is absent), else None. UmbraClient offers a private-topic envelope only to the
 * sessions it names (plus, see there, those that read an earlier one of the same batch). */
static PyObject *
HintIndex_route(HintIndexObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "route(payloads, max_bytes) takes 2 arguments");
        return NULL;
    }
    Py_ssize_t max_bytes = PyLong_AsSsize_t(args[1]);
    if (max_bytes == -1 && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *payloads = args[0];
    if (PyBytes_Check(payloads) || PyByteArray_Check(payloads) || PyMemoryView_Check(payloads) ||
        PyUnicode_Check(payloads)) {
        PyErr_SetString(PyExc_TypeError, "route() takes a sequence of payloads, not one payload");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(payloads, "route() takes a sequence of payloads");
    if (seq == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    PyObject *out = PyList_New(n);
    if (out == NULL) {
        Py_DECREF(seq);
        return NULL;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *data = items[k];
        PyObject *owners = NULL;
        Scanned scanned;
        if (PyBytes_CheckExact(data) && PyBytes_GET_SIZE(data) <= max_bytes &&
            scan_envelope((const uint8_t *)PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data),
                          &scanned)) {
            owners = index_owners(self, normalise(scanned.fp));
            if (owners == NULL) {
                Py_DECREF(out);
                Py_DECREF(seq);
                return NULL;
            }
        }
        else {
            owners = Py_NewRef(Py_None);
        }
        PyList_SET_ITEM(out, k, owners);
    }
    Py_DECREF(seq);
    return out;
}

static PyMethodDef speedups_methods[] = {
    {"fingerprint", speedups_fingerprint, METH_O,
     "fingerprint(hint) -> int | None: the first 16 hex digits of a 64-digit lowercase hex hint"},
    {"private_hint", (PyCFunction)(void (*)(void))speedups_private_hint, METH_FASTCALL,
     "private_hint(hint_key, counter) -> str: hex keyed BLAKE2s-256 of u64(counter)"},
    {"private_fingerprints", (PyCFunction)(void (*)(void))speedups_private_fingerprints,
     METH_FASTCALL,
     "private_fingerprints(hint_key, first, count) -> bytes: the first 8 bytes of the digests of "
     "counters first .. first + count - 1"},
    {"scan_envelope", speedups_scan_envelope, METH_O,
     "scan_envelope(data) -> (hint, salt) | None: the scanner's verdict alone (for tests)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "umbra_waku._speedups",
    .m_doc = "Native hint index and NotForMe fast path (see umbra_waku/_speedups_py.py).",
    .m_size = -1,
    .m_methods = speedups_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    init_hexval();
    if (PyType_Ready(&HintIndex_Type) < 0 || PyType_Ready(&FastPath_Type) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&speedups_module);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(module, "HintIndex", (PyObject *)&HintIndex_Type) < 0 ||
        PyModule_AddObjectRef(module, "FastPath", (PyObject *)&FastPath_Type) < 0 ||
        PyModule_AddObjectRef(module, "NATIVE", Py_True) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
