# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""int64 -> int64 hash table in C memory, with incremental resizing.

Layout
    One array of 16-byte slots (key, value): Robin Hood linear probing, with
    deletion by backward shift (no tombstones). The table size is any integer,
    not a power of two: a key's home slot is ``(hash * capacity) >> 64``, so the
    table can grow by 25% at a time and stays between 72% and 90% full, about
    18 to 22 bytes per key.

Hash flooding
    Keys are hashed with a secret drawn at start-up (see HASH_SECRET), so a
    client cannot choose keys that pile into one probe run.

Every int64 is a key
    A free slot holds the key EMPTY_KEY (0). The key 0 itself is therefore
    stored outside the arrays, in ``Store.has_empty_key``/``empty_key_value``,
    so no key value is lost to the sentinel and calloc'd memory is already a
    table of free slots.

Incremental resize (as Redis's dict does, adapted to open addressing)
    When ``main`` passes 90% full (or drops under 30%), a new table sized for
    72% is allocated and the old one becomes ``draining``. Every later
    operation first migrates at most MIGRATE_MOVES entries, visiting at most
    MIGRATE_VISITS slots, so no request pays for the whole resize. The
    draining table is walked *downward* from just below a free slot: the entry
    at slot i is taken out only once slot i+1 is free, and removing the last
    entry of a probe run never breaks a lookup of the entries left in it.
    Lookups look in both tables; new keys only go into ``main``.
    With those budgets the migration finishes before ``main`` can reach 90%
    (growth: at most 0.128*C operations for an old table of C slots, leaving
    ``main`` at most 82% full; shrink: at most 0.045*C, at most 84% full).

Iteration and scanning
    Only this module walks the tables. store_iterator_init/next yield every key
    once (key 0, ``main``, ``draining``) of a store that does not change
    meanwhile, such as the AOF rewrite's forked copy. store_scan serves SCAN
    across requests: its cursor is a hash value, and each step emits the keys
    whose hash lies in the next range of about ``count`` home slots of
    ``main``, from both tables. Home slots are monotonic in the hash and Robin
    Hood order keeps entries sorted by home, so a range is one short walk per
    table; and which keys lie in a hash range does not depend on the table, so
    resizes between steps can make a scan neither skip nor repeat a key.

Eviction metadata and the memory limit (kvfast/_evict.pyx)
    With ``meta_enabled`` (an LRU or LFU maxmemory policy), every table has a
    byte array ``meta`` parallel to its slots: each entry's byte moves with it
    (insertion's block move, deletion's backward shift, migration), so the
    metadata costs 1 byte per slot (1.1 to 1.4 bytes per key) and nothing
    when off. ``resize_limit`` caps the bytes both tables may hold during a
    resize: a growth that would pass it is not started (the table keeps
    filling while a slot is free; the eviction layer evicts before that), so
    the next table is counted before it is allocated.
"""
import os

from libc.errno cimport ENOMEM
from libc.stdint cimport int64_t, uint8_t, uint64_t, INT64_MIN, INT64_MAX, UINT64_MAX, SIZE_MAX
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memmove
from posix.mman cimport mmap, munmap, PROT_READ, PROT_WRITE, MAP_PRIVATE, MAP_ANONYMOUS, MAP_FAILED

from kvfast._system cimport madvise, set_errno, MADV_DONTNEED

cdef extern from *:
    """
    typedef unsigned __int128 kvfast_uint128;
    #define kvfast_prefetch(address) __builtin_prefetch(address)
    /* The smallest hash whose home slot in a table of `capacity` slots is `slot`
       or later (for slot < capacity): ceil(slot * 2^64 / capacity). */
    static inline uint64_t kvfast_first_hash_of_slot(size_t slot, size_t capacity) {
        return (uint64_t)((((kvfast_uint128)slot << 64) + capacity - 1) / capacity);
    }
    """
    ctypedef unsigned long long kvfast_uint128
    void prefetch "kvfast_prefetch" (const void *address) nogil
    uint64_t first_hash_of_slot "kvfast_first_hash_of_slot" (size_t slot, size_t capacity) nogil

cdef enum:
    EMPTY_KEY = STORE_EMPTY_KEY   # the key of a free slot (0: calloc'd memory is all free slots)
    MIN_CAPACITY = 16
    QUICK_PROBES = 4              # slots a lookup checks by key alone (one cache line)
    MIGRATE_MOVES = 8             # entries moved per operation while draining
    MIGRATE_VISITS = 128          # slots visited per operation while draining
    MAPPED_BYTES = 1 << 20        # tables this large are mmap'd, and released as drained
    RELEASE_CHUNK = 2 << 20       # ...in chunks of this many bytes
    IDLE_MOVES = 1024             # entries moved per idle call (about 20-50 microseconds)
    IDLE_VISITS = 16384
    SAMPLE_TRIES = 64             # random slots store_sample tries, at most


# A secret drawn once per process, so nobody can pick keys that all hash to one
# probe run (hash flooding): splitmix64 alone is public and invertible.
cdef uint64_t HASH_SECRET = int.from_bytes(os.urandom(8), "little") | 1


cdef inline uint64_t mix64(int64_t key) noexcept nogil:
    """Keyed splitmix64 finaliser: spreads every input bit over the whole word;
    without the process's secret, which key lands where cannot be predicted."""
    cdef uint64_t x = <uint64_t>key ^ HASH_SECRET
    x ^= x >> 30
    x *= 0xbf58476d1ce4e5b9ULL
    x ^= x >> 27
    x *= 0x94d049bb133111ebULL
    x ^= x >> 31
    return x


cdef inline size_t home_slot(const Table *table, int64_t key) noexcept nogil:
    """The slot a key would occupy in an empty table: the hash scaled to capacity."""
    return <size_t>((<kvfast_uint128>mix64(key) * table.capacity) >> 64)


cdef inline size_t probe_distance(const Table *table, int64_t key, size_t slot) noexcept nogil:
    """How far ``slot`` lies past the key's home slot, wrapping at the end."""
    cdef size_t home = home_slot(table, key)
    return slot - home if slot >= home else slot + table.capacity - home


cdef inline size_t next_slot(const Table *table, size_t slot) noexcept nogil:
    slot += 1
    return 0 if slot == table.capacity else slot


cdef Slot *table_locate(const Table *table, int64_t key, size_t *insert_at) noexcept nogil:
    """Slot holding ``key`` (never EMPTY_KEY), or NULL with ``insert_at`` set to
    the slot where Robin Hood order would put it.

    Robin Hood order lets a miss stop as soon as it meets an entry closer to its
    own home than the searched key would be, instead of running to a free slot;
    that entry's slot is exactly where the key belongs.
    """
    return table_probe(table, key, home_slot(table, key), 0, insert_at)


cdef inline Slot *table_probe(const Table *table, int64_t key, size_t slot, size_t distance,
                              size_t *insert_at) noexcept nogil:
    """table_locate's walk, starting ``distance`` slots into the key's probe run."""
    cdef int64_t resident
    while True:
        resident = table.slots[slot].key
        if resident == key:
            return &table.slots[slot]
        if resident == EMPTY_KEY or probe_distance(table, resident, slot) < distance:
            insert_at[0] = slot
            return NULL
        slot = next_slot(table, slot)
        distance += 1


cdef inline Slot *table_find(const Table *table, int64_t key) noexcept nogil:
    """Slot holding ``key``, or NULL (also for a table not allocated yet).

    The first QUICK_PROBES slots of the key's probe run are checked by comparing
    keys alone: finding the key or a free slot there settles it (linear probing
    never leaves a free slot between a key's home and the key). Only then does
    the walk go on with table_locate's Robin Hood exit, which costs a hash of
    every resident it passes. Skipping that check for the first slots cannot
    miss the exit, only delay it: probe distances grow by at most one per
    slot along a run, so once a resident sits closer to its home than the
    searched key would, every resident after it (up to a free slot) does too.
    """
    cdef size_t ignored, slot, _probe
    cdef int64_t resident
    if table.capacity == 0:
        return NULL
    slot = home_slot(table, key)
    for _probe in range(<size_t>QUICK_PROBES):
        resident = table.slots[slot].key
        if resident == key:
            return &table.slots[slot]
        if resident == EMPTY_KEY:
            return NULL
        slot = next_slot(table, slot)
    return table_probe(table, key, slot, QUICK_PROBES, &ignored)


cdef void table_insert_at(Table *table, size_t slot, int64_t key, int64_t value, uint8_t meta) noexcept nogil:
    """Put a new entry at ``slot`` (as found by table_locate), moving the rest of
    the probe run one slot forward, up to the first free slot.

    Moving the run as a block keeps Robin Hood order (each moved entry is one
    step further from home, and the new entry is further from home than the one
    it displaces) and costs a memmove instead of recomputing every resident's
    home, which is what a swap-by-swap insertion does. The caller guarantees a
    free slot exists. ``meta`` is the entry's metadata byte (kept only when
    the table has a ``meta`` array, whose bytes move with the block).
    """
    cdef Slot *slots = table.slots
    cdef uint8_t *bytes = table.meta
    cdef size_t free_slot = slot, last = table.capacity - 1
    while slots[free_slot].key != EMPTY_KEY:
        free_slot = next_slot(table, free_slot)
    if free_slot >= slot:
        memmove(&slots[slot + 1], &slots[slot], (free_slot - slot) * sizeof(Slot))
        if bytes != NULL:
            memmove(&bytes[slot + 1], &bytes[slot], free_slot - slot)
    else:                                   # the run wraps around the end of the table
        memmove(&slots[1], &slots[0], free_slot * sizeof(Slot))
        slots[0] = slots[last]
        memmove(&slots[slot + 1], &slots[slot], (last - slot) * sizeof(Slot))
        if bytes != NULL:
            memmove(&bytes[1], &bytes[0], free_slot)
            bytes[0] = bytes[last]
            memmove(&bytes[slot + 1], &bytes[slot], last - slot)
    slots[slot].key = key
    slots[slot].value = value
    if bytes != NULL:
        bytes[slot] = meta
    table.count += 1


cdef inline void table_insert_new(Table *table, int64_t key, int64_t value, uint8_t meta) noexcept nogil:
    """Add a key known to be absent; the caller guarantees a free slot exists."""
    cdef size_t slot
    table_locate(table, key, &slot)
    table_insert_at(table, slot, key, value, meta)


cdef void table_remove(Table *table, Slot *found) noexcept nogil:
    """Remove the entry at ``found`` by backward shift.

    Each following entry that is not at its home slot moves back by one, until
    a free slot or an entry at home ends the run; no tombstones are left.
    """
    cdef size_t slot = found - table.slots
    cdef size_t following = next_slot(table, slot)
    cdef int64_t resident
    while True:
        resident = table.slots[following].key
        if resident == EMPTY_KEY or probe_distance(table, resident, following) == 0:
            break
        table.slots[slot] = table.slots[following]
        if table.meta != NULL:
            table.meta[slot] = table.meta[following]
        slot = following
        following = next_slot(table, following)
    table.slots[slot].key = EMPTY_KEY
    table.count -= 1


cdef inline size_t capacity_for(size_t count) noexcept nogil:
    """Table size that holds ``count`` entries at 72% load (never below MIN_CAPACITY)."""
    cdef size_t capacity = count * 25 // 18 + 1
    return capacity if capacity > MIN_CAPACITY else MIN_CAPACITY


cdef inline bint is_over_full(const Table *table, size_t count) noexcept nogil:
    return count * 10 > table.capacity * 9          # more than 90% full


cdef inline bint is_under_full(const Table *table) noexcept nogil:
    return table.capacity > MIN_CAPACITY and table.count * 10 < table.capacity * 3   # under 30%


cdef Slot *allocate_slots(size_t capacity) noexcept nogil:
    """A zeroed array of ``capacity`` free slots, or NULL. Large tables come
    straight from mmap: zero pages cost nothing until a slot on them is used,
    and a drained table can hand its pages back chunk by chunk (release_drained)."""
    cdef size_t size = capacity * sizeof(Slot)
    cdef void *memory
    if size < MAPPED_BYTES:
        return <Slot *>calloc(capacity, sizeof(Slot))
    memory = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    # No MADV_HUGEPAGE: with the kernel's "madvise" defrag setting, faults in such
    # a range may compact memory synchronously, the latency spikes Redis warns of.
    return NULL if memory == MAP_FAILED else <Slot *>memory


cdef void free_slots(Slot *slots, size_t capacity) noexcept nogil:
    if slots == NULL:
        return
    if capacity * sizeof(Slot) < MAPPED_BYTES:
        free(slots)
    else:
        munmap(slots, capacity * sizeof(Slot))


cdef void release_drained(Store *store) noexcept nogil:
    """Return to the system the whole chunks of the draining table that the walk
    has emptied (below the starting slot, above the cursor), so a resize does not
    hold two full tables until its end and the final munmap is cheap. Reading a
    released page later yields zeros, i.e. free slots, which is what it held."""
    cdef Table *old = &store.draining
    cdef size_t lowest_empty, boundary
    if old.capacity * sizeof(Slot) < MAPPED_BYTES or store.drain_cursor >= store.drain_start:
        return                       # small table, or the walk has wrapped to the top run
    lowest_empty = (store.drain_cursor + 1) * sizeof(Slot)
    boundary = (lowest_empty + RELEASE_CHUNK - 1) // RELEASE_CHUNK * RELEASE_CHUNK
    if boundary < store.drain_released:
        madvise(<char *>old.slots + boundary, store.drain_released - boundary, MADV_DONTNEED)
        store.drain_released = boundary


cdef inline size_t slot_bytes(const Store *store) noexcept nogil:
    """Bytes one slot costs: the entry, and its metadata byte when kept."""
    return sizeof(Slot) + (1 if store.meta_enabled else 0)


cdef void free_table(Table *table) noexcept nogil:
    """Release a table's slots and metadata; it is left unallocated."""
    free_slots(table.slots, table.capacity)
    free(table.meta)
    table.slots = NULL
    table.meta = NULL
    table.capacity = table.count = 0


cdef int start_resize(Store *store, size_t capacity) noexcept nogil:
    """Make a new empty ``main`` of ``capacity`` slots and start draining the old one.

    Returns 0, or -1 with errno ENOMEM (the store is then unchanged): no
    memory, or a growth that would make both tables together pass
    ``resize_limit`` (a shrink is always allowed: it lowers the use once the
    old table has drained). Called only when no migration is under way. An
    empty old table is freed at once.
    """
    cdef size_t kept = 0 if store.main.count == 0 else store.main.capacity
    cdef Slot *slots
    cdef uint8_t *meta = NULL
    if capacity > store.main.capacity and (kept + capacity) * slot_bytes(store) > store.resize_limit:
        set_errno(ENOMEM)
        return -1
    slots = allocate_slots(capacity)
    if slots == NULL:
        set_errno(ENOMEM)
        return -1
    if store.meta_enabled:
        meta = <uint8_t *>calloc(capacity, 1)
        if meta == NULL:
            free_slots(slots, capacity)
            set_errno(ENOMEM)
            return -1
    store.stats.resizes += 1
    if store.main.count == 0:
        free_table(&store.main)
    else:
        store.draining = store.main
        # Start just below the highest free slot (a table is never full), walking
        # downward: the part left for after the wrap is only the run at the top.
        store.drain_start = store.draining.capacity - 1
        while store.draining.slots[store.drain_start].key != EMPTY_KEY:
            store.drain_start -= 1
        store.drain_cursor = store.drain_start - 1 if store.drain_start > 0 else store.draining.capacity - 1
        store.drain_remaining = store.draining.capacity - 1
        store.drain_released = store.drain_start * sizeof(Slot) // RELEASE_CHUNK * RELEASE_CHUNK
    store.main.slots = slots
    store.main.meta = meta
    store.main.capacity = capacity
    store.main.count = 0
    return 0


cdef size_t migrate_step(Store *store, size_t max_moves, size_t max_visits) noexcept nogil:
    """Move at most ``max_moves`` entries from ``draining`` to ``main``, visiting at
    most ``max_visits`` slots; free ``draining`` once every slot has been visited.
    Returns the number of entries moved.

    Walking downward means the slot above the cursor is always free (it was the
    free starting slot or has just been emptied), so each entry taken out is the
    last of its probe run and the entries left behind stay reachable.
    """
    cdef Table *old = &store.draining
    cdef size_t moved = 0, visited = 0, slot
    while store.drain_remaining > 0 and moved < max_moves and visited < max_visits:
        slot = store.drain_cursor
        if old.slots[slot].key != EMPTY_KEY:
            table_insert_new(&store.main, old.slots[slot].key, old.slots[slot].value,
                             old.meta[slot] if old.meta != NULL else store.meta_fill)
            old.slots[slot].key = EMPTY_KEY
            old.count -= 1
            moved += 1
        store.drain_cursor = old.capacity - 1 if slot == 0 else slot - 1
        store.drain_remaining -= 1
        visited += 1
    if store.drain_remaining == 0:
        free_table(old)
    else:
        release_drained(store)
    return moved


cdef inline void migrate_if_draining(Store *store) noexcept nogil:
    """The share of a running resize that every request pays (at most
    MIGRATE_MOVES entries); the largest share paid is kept in the stats."""
    cdef size_t moved
    if store.draining.capacity != 0:
        moved = migrate_step(store, MIGRATE_MOVES, MIGRATE_VISITS)
        if moved > store.stats.max_moved_per_step:
            store.stats.max_moved_per_step = moved


cdef bint store_migrate_idle(Store *store) noexcept nogil:
    """Advance a resize while the server has nothing else to do (as Redis's
    active rehashing does), so an idle server never keeps two tables for long.
    Moves at most IDLE_MOVES entries; returns whether a resize is still running."""
    if store.draining.capacity != 0:
        migrate_step(store, IDLE_MOVES, IDLE_VISITS)
    return store.draining.capacity != 0


cdef int make_room_for_one(Store *store) noexcept nogil:
    """Ensure ``main`` can take one more key without passing 90% full.

    Starts a growth when idle. While a migration is still running (which the
    budgets above make impossible in practice) it is finished in one go first,
    counted in ``stats.forced_drains``; if ``main`` could not even hold what is
    left to drain, both tables are rebuilt into one big enough. Returns 0, or -1
    with errno ENOMEM when the store has no room left at all.
    """
    if store.main.capacity == 0:
        return start_resize(store, MIN_CAPACITY)
    if not is_over_full(&store.main, store.main.count + 1):
        return 0
    if store.draining.capacity != 0:
        store.stats.forced_drains += 1
        if is_over_full(&store.main, store.main.count + store.draining.count + 1):
            return rebuild(store, capacity_for(store.main.count + store.draining.count + 1))
        migrate_step(store, <size_t>-1, <size_t>-1)
    if start_resize(store, capacity_for(store.main.count + 1)) == 0:
        return 0
    # Out of memory for a bigger table: keep filling this one while a slot is free.
    return 0 if store.main.count + 1 < store.main.capacity else -1


cdef int rebuild(Store *store, size_t capacity) noexcept nogil:
    """Move every entry of both tables into one new table of ``capacity`` slots
    at once, ending a migration. Returns 0, or -1 with errno ENOMEM (nothing
    changed)."""
    cdef Table fresh
    cdef const Table *old
    cdef size_t slot
    cdef int i
    fresh.slots = allocate_slots(capacity)
    fresh.meta = NULL
    if fresh.slots == NULL:
        set_errno(ENOMEM)
        return -1
    if store.meta_enabled:
        fresh.meta = <uint8_t *>calloc(capacity, 1)
        if fresh.meta == NULL:
            free_slots(fresh.slots, capacity)
            set_errno(ENOMEM)
            return -1
    fresh.capacity = capacity
    fresh.count = 0
    for i in range(2):
        old = &store.main if i == 0 else &store.draining
        for slot in range(old.capacity):
            if old.slots[slot].key != EMPTY_KEY:
                table_insert_new(&fresh, old.slots[slot].key, old.slots[slot].value,
                                 old.meta[slot] if old.meta != NULL else store.meta_fill)
    free_table(&store.main)
    free_table(&store.draining)
    store.main = fresh
    store.drain_cursor = store.drain_remaining = store.drain_start = store.drain_released = 0
    store.stats.resizes += 1
    return 0


cdef void store_init(Store *store) noexcept nogil:
    """An empty store; no memory is taken until the first key arrives."""
    store.main.slots = NULL
    store.main.meta = NULL
    store.main.capacity = 0
    store.main.count = 0
    store.draining = store.main
    store.drain_cursor = 0
    store.drain_remaining = 0
    store.drain_start = 0
    store.drain_released = 0
    store.has_empty_key = False
    store.empty_key_value = 0
    store.bulk_loading = False
    store.meta_enabled = False
    store.meta_fill = 0
    store.resize_limit = SIZE_MAX
    store.shrink_paused = False
    store.stats.resizes = 0
    store.stats.max_moved_per_step = 0
    store.stats.forced_drains = 0


cdef void store_free(Store *store) noexcept nogil:
    """Release both tables; the store is empty and usable afterwards (its
    metadata setting and resize limit are kept)."""
    free_table(&store.main)
    free_table(&store.draining)
    cdef StoreStats stats = store.stats
    cdef bint meta_enabled = store.meta_enabled
    cdef uint8_t meta_fill = store.meta_fill
    cdef size_t resize_limit = store.resize_limit
    store_init(store)
    store.stats = stats
    store.meta_enabled = meta_enabled
    store.meta_fill = meta_fill
    store.resize_limit = resize_limit


cdef void store_clear(Store *store) noexcept nogil:
    """Remove every key (memory is returned too)."""
    store_free(store)


cdef int64_t *store_lookup(Store *store, int64_t key) noexcept nogil:
    """Pointer to the value stored for ``key``, or NULL.

    The pointer is valid until the next call that adds or removes a key.
    """
    cdef Slot *found
    if key == EMPTY_KEY:
        return &store.empty_key_value if store.has_empty_key else NULL
    migrate_if_draining(store)
    found = table_find(&store.main, key)
    if found == NULL:
        found = table_find(&store.draining, key)
    return &found.value if found != NULL else NULL


cdef int store_insert(Store *store, int64_t key, int64_t value) noexcept nogil:
    """Insert ``key`` only if absent: 1 if inserted, 0 if present (value kept),
    -1 with errno ENOMEM if there is no memory for it."""
    cdef size_t slot
    if key == EMPTY_KEY:
        if store.has_empty_key:
            return 0
        store.has_empty_key = True
        store.empty_key_value = value
        return 1
    migrate_if_draining(store)
    if table_find(&store.draining, key) != NULL:
        return 0
    if store.main.capacity != 0 and table_locate(&store.main, key, &slot) != NULL:
        return 0
    if store.main.capacity == 0 or is_over_full(&store.main, store.main.count + 1):
        if make_room_for_one(store) != 0:
            return -1
        table_insert_new(&store.main, key, value, store.meta_fill)      # main may be a new table now
    else:
        table_insert_at(&store.main, slot, key, value, store.meta_fill)
    return 1


cdef int store_upsert(Store *store, int64_t key, int64_t value) noexcept nogil:
    """Set ``key`` to ``value``: 1 if the key is new, 0 if it was overwritten,
    -1 with errno ENOMEM."""
    cdef int64_t *current = store_lookup(store, key)
    if current != NULL:
        current[0] = value
        return 0
    return store_insert(store, key, value)


cdef int store_increment(Store *store, int64_t key, int64_t delta, int64_t *result) noexcept nogil:
    """Add ``delta`` to the value of ``key`` (an absent key counts as 0) and put
    the sum in ``result``. Returns 0; 1 if the sum would overflow int64 (nothing
    changes); -1 with errno ENOMEM."""
    cdef int64_t *found = store_lookup(store, key)
    cdef int64_t current = found[0] if found != NULL else 0
    if (delta > 0 and current > INT64_MAX - delta) or (delta < 0 and current < INT64_MIN - delta):
        return 1
    result[0] = current + delta
    if found != NULL:
        found[0] = result[0]
        return 0
    return -1 if store_insert(store, key, result[0]) < 0 else 0


cdef bint store_delete(Store *store, int64_t key) noexcept nogil:
    """Remove ``key``; returns whether it was present. May start a shrink."""
    cdef Slot *found
    if key == EMPTY_KEY:
        if not store.has_empty_key:
            return False
        store.has_empty_key = False
        return True
    migrate_if_draining(store)
    found = table_find(&store.main, key)
    if found != NULL:
        table_remove(&store.main, found)
        if store.draining.capacity == 0 and not store.bulk_loading and not store.shrink_paused \
                and is_under_full(&store.main):
            start_resize(store, capacity_for(store.main.count))   # ENOMEM: stay as is
        return True
    found = table_find(&store.draining, key)
    if found != NULL:
        table_remove(&store.draining, found)
        return True
    return False


cdef int store_begin_bulk_load(Store *store, size_t at_most) noexcept nogil:
    """Prepare an empty store to take up to ``at_most`` keys in one go (replaying
    the append-only file): the table is sized for them at once, so the load
    never pays for growing, and deletes do not shrink it meanwhile (a shrink
    from a huge, nearly empty table could not drain in time). Untouched pages of
    a large table cost no memory, so over-estimating is cheap; store_end_bulk_load
    trims. Returns 0 (nothing to do for a store that is not empty), or -1 (ENOMEM)."""
    if store.main.capacity != 0 or store.draining.capacity != 0 or at_most == 0:
        return 0
    if start_resize(store, capacity_for(at_most)) < 0:
        return -1
    store.bulk_loading = True
    return 0


cdef void store_end_bulk_load(Store *store) noexcept nogil:
    """After a bulk load: shrink a table left under 30% full, in one go (this
    runs before serving starts), so serving begins with a table of normal size.
    Without memory for the smaller table the big one simply stays."""
    store.bulk_loading = False
    if store.draining.capacity == 0 and is_under_full(&store.main):
        if start_resize(store, capacity_for(store.main.count)) == 0:
            migrate_step(store, <size_t>-1, <size_t>-1)


cdef void store_pause_shrink(Store *store) noexcept nogil:
    """Deletes stop shrinking the table until store_resume_shrink: for a walk
    that deletes keys in hash order (the expiry sweep). A shrink in the middle
    of such a walk would put the keys left, whose hashes all lie in the part
    not walked yet, into a table sized for their number: their home slots
    would all fall in that part, one cluster longer than the table is wide
    with room, and every later delete's backward shift would walk it."""
    store.shrink_paused = True


cdef void store_resume_shrink(Store *store) noexcept nogil:
    """End store_pause_shrink: a table left under 30% full starts its
    incremental shrink now (an empty one is freed at once)."""
    store.shrink_paused = False
    if store.draining.capacity == 0 and not store.bulk_loading and store.main.capacity > MIN_CAPACITY \
            and is_under_full(&store.main):
        start_resize(store, capacity_for(store.main.count))       # ENOMEM: stay as is


cdef void store_prefetch(const Store *store, int64_t key) noexcept nogil:
    """Start loading the cache line of ``key``'s home slot, so a bulk load can
    overlap the cache misses of the next few keys with the current one."""
    if store.main.capacity != 0:
        prefetch(&store.main.slots[home_slot(&store.main, key)])


cdef size_t store_count(const Store *store) noexcept nogil:
    return store.main.count + store.draining.count + (1 if store.has_empty_key else 0)


cdef size_t store_memory_bytes(const Store *store) noexcept nogil:
    """Bytes held by the tables and their metadata (the Store struct itself
    excluded). A draining table counts whole until its end, though its
    emptied chunks are already returned: the figure never understates."""
    return (store.main.capacity + store.draining.capacity) * slot_bytes(store)


cdef size_t store_growth_bytes(const Store *store) noexcept nogil:
    """The bytes inserting one new key now would allocate (the next table,
    when ``main`` would pass 90% full and none is draining), else 0: what the
    memory limit counts before deciding a write may grow the store."""
    if store.main.capacity == 0:
        return MIN_CAPACITY * slot_bytes(store)
    if store.draining.capacity != 0 or not is_over_full(&store.main, store.main.count + 1):
        return 0
    return capacity_for(store.main.count + 1) * slot_bytes(store)


cdef int store_set_metadata(Store *store, bint enabled, uint8_t fill) noexcept nogil:
    """Keep (or drop) a metadata byte per slot; every present key's byte is
    set to ``fill``, as are new keys' from now on. Returns 0, or -1 with
    errno ENOMEM (nothing changes)."""
    cdef uint8_t *main_meta = NULL
    cdef uint8_t *draining_meta = NULL
    cdef size_t i
    store.meta_fill = fill
    if not enabled:
        free(store.main.meta)
        free(store.draining.meta)
        store.main.meta = store.draining.meta = NULL
        store.meta_enabled = False
        return 0
    if store.meta_enabled:
        return 0
    if store.main.capacity != 0:
        main_meta = <uint8_t *>malloc(store.main.capacity)
    if store.draining.capacity != 0:
        draining_meta = <uint8_t *>malloc(store.draining.capacity)
    if (store.main.capacity != 0 and main_meta == NULL) or (store.draining.capacity != 0 and draining_meta == NULL):
        free(main_meta)
        free(draining_meta)
        set_errno(ENOMEM)
        return -1
    for i in range(store.main.capacity):
        main_meta[i] = fill
    for i in range(store.draining.capacity):
        draining_meta[i] = fill
    store.main.meta = main_meta
    store.draining.meta = draining_meta
    store.meta_enabled = True
    return 0


cdef uint8_t *store_meta_of(Store *store, const int64_t *value) noexcept nogil:
    """The metadata byte of the entry whose value ``value`` points to (as
    store_lookup returned it, before the store changed again), or NULL (no
    metadata kept, or the key 0, which lives outside the tables)."""
    cdef const Slot *slot = <const Slot *>(<const char *>value - sizeof(int64_t))
    if not store.meta_enabled:
        return NULL
    if store.main.capacity != 0 and store.main.slots <= slot < store.main.slots + store.main.capacity:
        return &store.main.meta[slot - store.main.slots]
    if store.draining.capacity != 0 and store.draining.slots <= slot < store.draining.slots + store.draining.capacity:
        return &store.draining.meta[slot - store.draining.slots]
    return NULL


cdef bint store_sample(Store *store, uint64_t random, int64_t *key, uint8_t **meta) noexcept nogil:
    """A key picked at random, each about equally likely (``random``: 64
    random bits): the entry at a random slot of a table chosen in proportion
    to its keys, drawing again (at most SAMPLE_TRIES times, from a generator
    seeded by ``random``) while the slot is free; its metadata byte in
    ``meta`` (NULL if not kept). False when the tables hold no key, or no
    draw found one (the tables are at least 30% full, so that takes
    0.7^SAMPLE_TRIES bad luck). Rejection rather than "the next entry after a
    random slot": that would favour the entries after long free runs, and
    evicting those grows the runs until sampling finds nothing. The key 0
    (kept outside the tables) is never picked."""
    cdef Table *table
    cdef size_t total = store.main.count + store.draining.count, slot, _try
    if total == 0:
        return False
    for _try in range(<size_t>SAMPLE_TRIES):
        random = random * 6364136223846793005ULL + 1442695040888963407ULL     # Knuth's MMIX LCG
        table = &store.main
        if store.draining.count != 0 and \
                <size_t>((<kvfast_uint128>(random >> 40) * total) >> 24) < store.draining.count:
            table = &store.draining
        if table.capacity == 0:
            continue
        slot = <size_t>((<kvfast_uint128>(random >> 8) * table.capacity) >> 56)
        if table.slots[slot].key != EMPTY_KEY:
            key[0] = table.slots[slot].key
            meta[0] = &table.meta[slot] if table.meta != NULL else NULL
            return True
    return False


cdef bint store_is_resizing(const Store *store) noexcept nogil:
    """Whether a migration is under way: a draining table still holds keys (or
    slots not yet visited), and store_migrate_idle has work to do."""
    return store.draining.capacity != 0


cdef void store_iterator_init(StoreIterator *iterator, const Store *store) noexcept nogil:
    """Start a walk over every key of ``store``: the key STORE_EMPTY_KEY (kept
    outside the tables) first, then ``main`` slot by slot, then ``draining``.

    Each key lies in exactly one place (a key is in ``main`` or in ``draining``,
    never both), so the walk yields each exactly once, provided the store does
    not change until it ends: any insert, delete or lookup (which may migrate
    entries) invalidates it. That suits a forked child's frozen copy (the AOF
    rewrite); a walk across requests is store_scan's job.
    """
    iterator.store = store
    iterator.table = &store.main
    iterator.next_slot = 0
    iterator.empty_key_pending = store.has_empty_key


cdef bint store_iterator_next(StoreIterator *iterator, int64_t *key, int64_t *value) noexcept nogil:
    """Put the walk's next key and its value in ``key``/``value`` and return True,
    or return False once every key has been yielded (and on every later call).

    The slot loop works on local copies, so the scan for the next occupied slot
    is as tight as a plain loop over the array: the iterator is written back
    only when a key is found or a table ends.
    """
    cdef const Table *table = iterator.table
    cdef const Slot *slots
    cdef size_t slot, capacity
    if iterator.empty_key_pending:
        iterator.empty_key_pending = False
        key[0] = EMPTY_KEY
        value[0] = iterator.store.empty_key_value
        return True
    while table != NULL:
        slots = table.slots
        capacity = table.capacity
        slot = iterator.next_slot
        while slot < capacity:
            if slots[slot].key != EMPTY_KEY:
                key[0] = slots[slot].key
                value[0] = slots[slot].value
                iterator.next_slot = slot + 1
                return True
            slot += 1
        table = &iterator.store.draining if table == &iterator.store.main else NULL
        iterator.table = table
        iterator.next_slot = 0
    return False


cdef inline size_t home_of_hash(size_t capacity, uint64_t hash) noexcept nogil:
    """home_slot for a hash already computed: monotonic (non-decreasing) in the hash."""
    return <size_t>((<kvfast_uint128>hash * capacity) >> 64)


cdef void scan_table(const Table *table, uint64_t first, uint64_t last, StoreScanEmit emit,
                     void *context) noexcept nogil:
    """Emit every entry of ``table`` whose hash lies in [first, last], each once.

    Such entries have their home slots in [start, end] (the homes of ``first``
    and ``last``; homes are monotonic in the hash). Robin Hood order keeps each
    probe run sorted by home slot, and linear probing leaves no free slot
    between an entry's home and the entry. So walking forward from ``start``
    (wrapping at the end of the array, where the run of the last slots spills
    over to the first ones) meets all of them; once past ``end``, the walk ends
    at a free slot or at an entry whose home lies past ``end``, as every later
    entry of that run has its home there too. Entries met on the way whose hash
    lies outside the range (displaced from homes before ``start``, or sharing
    ``start``'s or ``end``'s home slot) are skipped. The walk visits each slot
    at most once: a walk of ``capacity`` slots has seen the whole table.

    Cost: ``end - start + 1`` slots plus the probe run reaching past ``end``,
    one hash per entry met.
    """
    cdef size_t capacity = table.capacity, start, span, slot, walked, home, distance
    cdef const Slot *slots = table.slots
    cdef uint64_t hash
    cdef int64_t key
    if capacity == 0:
        return
    start = home_of_hash(capacity, first)
    span = home_of_hash(capacity, last) - start        # slots past `start` that are homes in range
    slot = start
    for walked in range(capacity):
        key = slots[slot].key
        if key == EMPTY_KEY:
            if walked > span:
                return
        else:
            hash = mix64(key)
            if first <= hash <= last:
                emit(context, key, slots[slot].value)
            elif walked > span:
                # The entry's home, counted along the walk, is start + walked - distance.
                home = home_of_hash(capacity, hash)
                distance = slot - home if slot >= home else slot + capacity - home
                if distance < walked - span:
                    return                              # home past `end`: so is the rest of the run
        slot += 1
        if slot == capacity:
            slot = 0


cdef uint64_t store_scan(const Store *store, uint64_t cursor, size_t count,
                         StoreScanEmit emit, void *context) noexcept nogil:
    """One step of a SCAN: emit (through ``emit(context, key, value)``) every
    key whose keyed hash (mix64) lies in [cursor, next), and return ``next``,
    the cursor of the following step, or 0 when the range has reached 2^64 and
    the scan is finished. A scan starts with cursor 0; any uint64 is a valid
    cursor. ``count`` (0 counts as 1) is the step's size in home slots of
    ``main``: ``next`` is the first hash whose home slot lies ``count`` slots
    past the cursor's, so a step emits about 0.8 * ``count`` keys (more or
    fewer while a resize runs or after a bulk load sized the table for more
    keys), and the work is bounded by about ``count`` slots of ``main``, the
    matching slots of ``draining`` and the probe runs reaching past them.
    ``emit`` must not change the store; it cannot stop the step early (record
    a failure in ``context``). The store is not changed (no migration step).

    Contract (Redis's dictScan's, and a little more): a full scan, from cursor 0
    to the step returning 0, emits every key present from its start to its end
    at least once, whatever happens between steps: inserts, deletes, growth,
    shrinking, migration from ``draining`` to ``main``, clear, a bulk load. A
    key emitted was present during that step. Why: the steps cover the hash
    ranges [0, c1), [c1, c2), ... up to 2^64, contiguous and disjoint, and the
    set of keys whose hash lies in a range does not depend on the table sizes;
    each step emits every key in its range, in either table (scan_table) or
    outside them (the key 0), and since the hash is fixed for a process, a key
    present all along is in the range of exactly one step, when it was present.
    So a key is emitted at most once per full scan (a table walk visits a slot
    once, and a key sits in one slot of one table): no duplicates at all, unlike
    Redis, whose reverse-binary cursor may repeat keys after a shrink. (Hashes
    differ per process: a cursor is meaningless in another process.)
    """
    cdef size_t capacity = store.main.capacity, start
    cdef uint64_t last = UINT64_MAX
    cdef uint64_t empty_key_hash
    if count == 0:
        count = 1
    if capacity != 0:
        start = home_of_hash(capacity, cursor)
        if count < capacity - start:
            last = first_hash_of_slot(start + count, capacity) - 1
    if store.has_empty_key:
        empty_key_hash = mix64(EMPTY_KEY)
        if cursor <= empty_key_hash <= last:
            emit(context, EMPTY_KEY, store.empty_key_value)
    scan_table(&store.main, cursor, last, emit, context)
    scan_table(&store.draining, cursor, last, emit, context)
    return 0 if last == UINT64_MAX else last + 1


cdef class IntStore:
    """Python view of a :c:type:`Store`, for tests and benchmarks.

    ``put`` inserts only if absent (like the server's ``put``); ``set`` overwrites.
    """
    cdef Store store

    def __cinit__(self):
        store_init(&self.store)

    def __dealloc__(self):
        store_free(&self.store)

    def put(self, int64_t key, int64_t value):
        """Insert if absent; returns True if inserted, False if the key was present."""
        cdef int result = store_insert(&self.store, key, value)
        if result < 0:
            raise MemoryError()
        return result == 1

    def set(self, int64_t key, int64_t value):
        """Insert or overwrite; returns True if the key was new."""
        cdef int result = store_upsert(&self.store, key, value)
        if result < 0:
            raise MemoryError()
        return result == 1

    def get(self, int64_t key, default=None):
        cdef int64_t *value = store_lookup(&self.store, key)
        return default if value == NULL else value[0]

    def increment(self, int64_t key, int64_t delta=1):
        """Add ``delta`` (absent counts as 0); returns the new value. OverflowError
        if it would not fit in int64 (the stored value is unchanged)."""
        cdef int64_t value
        cdef int result = store_increment(&self.store, key, delta, &value)
        if result == 1:
            raise OverflowError("increment would overflow")
        if result < 0:
            raise MemoryError()
        return value

    def delete(self, int64_t key):
        """Remove the key; returns whether it was present."""
        return store_delete(&self.store, key)

    def clear(self):
        store_clear(&self.store)

    def migrate_idle(self):
        """One idle-time migration step; returns whether a resize is still running."""
        return store_migrate_idle(&self.store)

    def begin_bulk_load(self, size_t at_most):
        """See store_begin_bulk_load (for tests of the replay's sizing)."""
        if store_begin_bulk_load(&self.store, at_most) < 0:
            raise MemoryError()

    def end_bulk_load(self):
        store_end_bulk_load(&self.store)

    def put_range(self, int64_t start, int64_t count, int64_t step=1):
        """Insert keys start, start+step, ... (value = key) without the GIL; returns
        how many were new. For loading large tables quickly in tests and benchmarks."""
        cdef int64_t i, inserted = 0, key
        cdef int result = 0
        with nogil:
            for i in range(count):
                key = start + i * step
                result = store_insert(&self.store, key, key)
                if result < 0:
                    break
                inserted += result
        if result < 0:
            raise MemoryError()
        return inserted

    def get_range(self, int64_t start, int64_t count, int64_t step=1):
        """Look up keys start, start+step, ... without the GIL; returns how many
        were found. With put_range and delete_range, the store's micro-benchmark."""
        cdef int64_t i, found = 0
        with nogil:
            for i in range(count):
                found += store_lookup(&self.store, start + i * step) != NULL
        return found

    def delete_range(self, int64_t start, int64_t count, int64_t step=1):
        """Delete keys start, start+step, ... without the GIL; returns how many existed."""
        cdef int64_t i, deleted = 0
        with nogil:
            for i in range(count):
                deleted += store_delete(&self.store, start + i * step)
        return deleted

    def scan(self, uint64_t cursor=0, size_t count=10):
        """One SCAN step (see store_scan): returns ``(next_cursor, keys)``, where
        ``next_cursor`` is 0 once the scan is complete."""
        cdef KeyList found
        cdef uint64_t next_cursor
        found.keys = NULL
        found.count = found.capacity = 0
        found.failed = False
        next_cursor = store_scan(&self.store, cursor, count, append_key, &found)
        try:
            if found.failed:
                raise MemoryError()
            return next_cursor, [found.keys[i] for i in range(found.count)]
        finally:
            free(found.keys)

    def keys(self):
        """Every key, each once, through store_iterator_next (in table order)."""
        cdef StoreIterator iterator
        cdef int64_t key, value
        result = []
        store_iterator_init(&iterator, &self.store)
        while store_iterator_next(&iterator, &key, &value):
            result.append(key)
        return result

    def set_metadata(self, bint enabled, int fill=0):
        """Keep (or drop) the per-slot metadata byte (see store_set_metadata)."""
        if store_set_metadata(&self.store, enabled, <uint8_t>fill) < 0:
            raise MemoryError()

    def meta(self, int64_t key):
        """The metadata byte of ``key`` (None: absent, the key 0, or none kept)."""
        cdef int64_t *value = store_lookup(&self.store, key)
        cdef uint8_t *meta = store_meta_of(&self.store, value) if value != NULL else NULL
        return None if meta == NULL else meta[0]

    def set_meta(self, int64_t key, int byte):
        """Set the metadata byte of a present key (KeyError if absent or none kept)."""
        cdef int64_t *value = store_lookup(&self.store, key)
        cdef uint8_t *meta = store_meta_of(&self.store, value) if value != NULL else NULL
        if meta == NULL:
            raise KeyError(key)
        meta[0] = <uint8_t>byte

    @property
    def resize_limit(self):
        return self.store.resize_limit

    @resize_limit.setter
    def resize_limit(self, size_t limit):
        self.store.resize_limit = limit

    def sample(self, uint64_t random):
        """store_sample: a key picked from ``random`` bits, or None."""
        cdef int64_t key
        cdef uint8_t *meta
        return key if store_sample(&self.store, random, &key, &meta) else None

    def __len__(self):
        return store_count(&self.store)

    def __contains__(self, int64_t key):
        return store_lookup(&self.store, key) != NULL

    @property
    def memory_bytes(self):
        """Bytes held by the hash tables."""
        return store_memory_bytes(&self.store)

    def stats(self):
        """Sizes and resize counters, for tests and the benchmark reports."""
        return {
            "count": store_count(&self.store),
            "capacity": self.store.main.capacity,
            "draining_capacity": self.store.draining.capacity,
            "resizing": store_is_resizing(&self.store),
            "memory_bytes": store_memory_bytes(&self.store),
            "resizes": self.store.stats.resizes,
            "max_moved_per_step": self.store.stats.max_moved_per_step,
            "forced_drains": self.store.stats.forced_drains,
        }

    def check_invariants(self):
        """Walk both tables and raise AssertionError on any broken invariant:
        counts, reachability of every entry, and Robin Hood ordering."""
        check_table(&self.store.main)
        check_table(&self.store.draining)
        if self.store.draining.capacity == 0 and self.store.drain_remaining != 0:
            raise AssertionError("drain cursor left over")


cdef struct KeyList:
    int64_t *keys
    size_t count
    size_t capacity
    bint failed                  # out of memory: some keys were dropped


cdef void append_key(void *context, int64_t key, int64_t value) noexcept nogil:
    """store_scan's emit for IntStore.scan: append ``key`` to the KeyList ``context``."""
    cdef KeyList *found = <KeyList *>context
    cdef int64_t *grown
    cdef size_t capacity
    if found.count == found.capacity:
        capacity = found.capacity * 2 if found.capacity else 64
        grown = <int64_t *>realloc(found.keys, capacity * sizeof(int64_t))
        if grown == NULL:
            found.failed = True
            return
        found.keys = grown
        found.capacity = capacity
    found.keys[found.count] = key
    found.count += 1


cdef check_table(Table *table):
    """Raise AssertionError unless every entry of ``table`` is reachable from its
    home slot, Robin Hood order holds, the count is right and a slot is free."""
    cdef size_t slot, counted = 0, previous
    cdef int64_t key
    for slot in range(table.capacity):
        key = table.slots[slot].key
        if key == EMPTY_KEY:
            continue
        counted += 1
        if table_find(table, key) != &table.slots[slot]:
            raise AssertionError(f"key {key} at slot {slot} is unreachable")
        previous = table.capacity - 1 if slot == 0 else slot - 1
        if (probe_distance(table, key, slot) > 0
                and probe_distance(table, table.slots[previous].key, previous) + 1
                < probe_distance(table, key, slot)):
            raise AssertionError(f"Robin Hood order broken at slot {slot}")
    if counted != table.count:
        raise AssertionError(f"table counts {table.count} entries, holds {counted}")
    if table.capacity and counted >= table.capacity:
        raise AssertionError("table has no free slot")
