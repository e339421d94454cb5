# The int64 -> int64 hash table shared by every connection of a server.
# _loop.pyx cimports this C-level API and calls it without the GIL.
from libc.stdint cimport int64_t, uint8_t, uint64_t


cdef enum:
    STORE_EMPTY_KEY = 0          # the key of a free slot; the key 0 itself is kept outside the tables


cdef struct Slot:
    int64_t key        # STORE_EMPTY_KEY marks a free slot (see _store.pyx)
    int64_t value


cdef struct Table:
    Slot *slots
    size_t capacity    # any size >= 1; 0 means "not allocated"
    size_t count
    uint8_t *meta      # one byte per slot, moved with its entry (eviction's clock/counter), or NULL


cdef struct StoreStats:
    size_t resizes               # migrations started (grow or shrink)
    size_t max_moved_per_step    # most entries one request ever migrated
    size_t forced_drains         # migrations finished in one go (should stay 0)


cdef struct Store:
    Table main                   # every new key goes here
    Table draining               # the previous table, emptied step by step (capacity 0 when idle)
    size_t drain_cursor          # next slot of `draining` to visit, moving downward
    size_t drain_remaining       # slots of `draining` not visited yet
    size_t drain_start           # the free slot the walk started below
    size_t drain_released        # bytes of `draining` from here up to drain_start's chunk are returned
    bint has_empty_key           # whether the key STORE_EMPTY_KEY itself is stored...
    int64_t empty_key_value      # ...and its value, kept outside the tables
    bint bulk_loading            # between store_begin/end_bulk_load: deletes do not shrink
    bint meta_enabled            # every table carries its ``meta`` byte array (store_set_metadata)
    uint8_t meta_fill            # ...and a new key's byte starts as this
    size_t resize_limit          # a resize never makes the tables larger than this many bytes
    bint shrink_paused           # between store_pause/resume_shrink: deletes do not shrink either
    StoreStats stats


# A walk over every key of a store that does not change meanwhile (a forked
# child's snapshot): see store_iterator_init. Its fields are store_iterator_next's.
cdef struct StoreIterator:
    const Store *store
    const Table *table           # the table being walked: main, then draining, then NULL (done)
    size_t next_slot             # the next slot of `table` to look at
    bint empty_key_pending       # the key STORE_EMPTY_KEY is still to be yielded


# Receives each key (and its value) store_scan finds; must not change the store.
ctypedef void (*StoreScanEmit)(void *context, int64_t key, int64_t value) noexcept nogil


cdef void store_init(Store *store) noexcept nogil
cdef void store_free(Store *store) noexcept nogil
cdef int store_insert(Store *store, int64_t key, int64_t value) noexcept nogil
cdef int store_upsert(Store *store, int64_t key, int64_t value) noexcept nogil
cdef int64_t *store_lookup(Store *store, int64_t key) noexcept nogil
cdef int store_increment(Store *store, int64_t key, int64_t delta, int64_t *result) noexcept nogil
cdef bint store_delete(Store *store, int64_t key) noexcept nogil
cdef void store_clear(Store *store) noexcept nogil
cdef bint store_migrate_idle(Store *store) noexcept nogil
cdef int store_begin_bulk_load(Store *store, size_t at_most) noexcept nogil
cdef void store_end_bulk_load(Store *store) noexcept nogil
cdef void store_pause_shrink(Store *store) noexcept nogil
cdef void store_resume_shrink(Store *store) noexcept nogil
cdef void store_prefetch(const Store *store, int64_t key) noexcept nogil
cdef size_t store_count(const Store *store) noexcept nogil
cdef size_t store_memory_bytes(const Store *store) noexcept nogil
cdef bint store_is_resizing(const Store *store) noexcept nogil
cdef size_t store_growth_bytes(const Store *store) noexcept nogil
cdef int store_set_metadata(Store *store, bint enabled, uint8_t fill) noexcept nogil
cdef uint8_t *store_meta_of(Store *store, const int64_t *value) noexcept nogil
cdef bint store_sample(Store *store, uint64_t random, int64_t *key, uint8_t **meta) noexcept nogil
cdef void store_iterator_init(StoreIterator *iterator, const Store *store) noexcept nogil
cdef bint store_iterator_next(StoreIterator *iterator, int64_t *key, int64_t *value) noexcept nogil
cdef uint64_t store_scan(const Store *store, uint64_t cursor, size_t count,
                         StoreScanEmit emit, void *context) noexcept nogil
