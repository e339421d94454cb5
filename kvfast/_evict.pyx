# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""maxmemory: a limit on the store's memory, and the policy that makes room.

Used memory
    ``memory_used`` is what INFO reports as ``used_memory``: the bytes of the
    hash tables (both, while a resize drains the old one) with their eviction
    metadata, the WATCH table, and every connection's struct and buffers (the
    loop keeps that count) plus the loop's shared read buffer. It is computed
    from sizes, not sampled, so it is exact for what it counts and cheap.

Admission (once per command that may add memory)
    The RESP dispatcher (rows flagged CMD_DENYOOM, Redis's denyoom) and the
    native one (put, set, incr) call memory_admit before the command runs,
    only while maxmemory is set. The store is "over" when the used memory,
    plus the next table a new key would make it allocate (store_growth_bytes),
    passes maxmemory: counting the next table before growing is what keeps a
    resize from overshooting (the old table lives until drained). While over,
    up to EVICT_BUDGET keys are evicted (bounded work: no request pays for a
    mass eviction); if none could be (noeviction, no candidate, the log
    failing), the command is refused with -OOM. The store itself never starts
    a growth past the limit either (``Store.resize_limit``), so even a command
    adding many keys (MSET) only fills the table it has.

    Consequence: the tables grow only while old and new fit together (1 +
    1.25 times the old size), so at the limit the table takes 44% to 56% of
    maxmemory and holds 0.4 to 0.5 keys per slot's worth of it: 32 to 40
    bytes of maxmemory per key (34 to 42.5 with the LRU/LFU byte).
    Used memory stays at or under maxmemory, but for what connections add
    after a write was admitted (their buffers are counted, not bounded here).

Policies (sampling, as Redis's evict.c)
    allkeys-random: a random key (store_sample: random slots until one is occupied).
    allkeys-lru, allkeys-lfu: five keys are sampled per eviction into a pool of
    the EVICTION_POOL_SIZE best candidates kept across evictions; the best one
    still present is evicted. LRU's byte is an 8-bit logical clock that ticks
    every keys/32 accesses (at least every 64): 256 ticks span about 8 times
    the keys in accesses, far beyond any key's life in a full cache, and the
    clock does not depend on the request rate (Redis's 1-second clock cannot
    tell apart keys used within the same second). LFU's byte is Redis's
    logarithmic counter (new keys 5, lfu-log-factor 10). Redis decays a
    counter by one per idle minute, from 16 more bits of time per key;
    here a sweep does it instead: once a minute a pass starts that lowers
    every counter by one, DECAY_STEP slots per admitted write (so a pass
    over a table of C slots takes C / DECAY_STEP writes; entries moving
    meanwhile may be lowered twice or skipped: approximate, as intended).
    volatile-*: the same, but the candidates are sampled from the deadlines
    (ServerContext.expires, kvfast/_expire.pyx), so only keys with a TTL are
    ever evicted; volatile-ttl evicts the soonest deadline of the pool. With
    no key with a TTL nothing is evictable and writes are refused (as Redis).
    An evicted key leaves through keyspace_drop (the server's own logged
    delete, its deadline with it).
    Cost per key: 1 byte per slot (1.1 to 1.4 bytes per key) for LRU/LFU while
    maxmemory is set, nothing otherwise.
"""
from libc.stdint cimport int64_t, uint8_t, uint64_t, SIZE_MAX, UINT64_MAX
from libc.stdio cimport snprintf
from libc.time cimport time

from kvfast._context cimport (
    ServerContext, Session, MaxmemoryPolicy, EvictionCandidate, COUNTER_EVICTED_KEYS, EVICTION_POOL_SIZE,
    POLICY_NOEVICTION, POLICY_ALLKEYS_LRU, POLICY_ALLKEYS_LFU, POLICY_ALLKEYS_RANDOM, POLICY_VOLATILE_LRU,
    POLICY_VOLATILE_LFU, POLICY_VOLATILE_RANDOM, POLICY_VOLATILE_TTL, POLICY_COUNT,
)
from kvfast._keyspace cimport LFU_INITIAL, keyspace_begin_write, keyspace_drop, memory_random
from kvfast._store cimport (
    store_memory_bytes, store_growth_bytes, store_set_metadata, store_sample, store_lookup, store_meta_of,
)
from kvfast._text cimport equals_nocase


cdef enum:
    EVICT_BUDGET = 16               # keys one command may evict, at most
    DECAY_STEP = 64                 # LFU: slots the decay sweep visits per admitted write
    SAMPLES = 5                     # keys sampled per eviction (Redis's maxmemory-samples)
    POOL_SIZE = EVICTION_POOL_SIZE


cdef const char *POLICY_NAMES[<int>POLICY_COUNT]
POLICY_NAMES[<int>POLICY_NOEVICTION] = b"noeviction"
POLICY_NAMES[<int>POLICY_ALLKEYS_LRU] = b"allkeys-lru"
POLICY_NAMES[<int>POLICY_ALLKEYS_LFU] = b"allkeys-lfu"
POLICY_NAMES[<int>POLICY_ALLKEYS_RANDOM] = b"allkeys-random"
POLICY_NAMES[<int>POLICY_VOLATILE_LRU] = b"volatile-lru"
POLICY_NAMES[<int>POLICY_VOLATILE_LFU] = b"volatile-lfu"
POLICY_NAMES[<int>POLICY_VOLATILE_RANDOM] = b"volatile-random"
POLICY_NAMES[<int>POLICY_VOLATILE_TTL] = b"volatile-ttl"

#: The policy names in kvfast.config's order (the setting's choices).
POLICIES = tuple(POLICY_NAMES[i].decode() for i in range(<int>POLICY_COUNT))

cdef char HUMAN[32]                 # maxmemory_human's text (the loop is single-threaded)


cdef int policy_from_name(const char *name, size_t length) noexcept nogil:
    """The MaxmemoryPolicy named (any case), or -1."""
    cdef int i
    for i in range(<int>POLICY_COUNT):
        if equals_nocase(name, length, POLICY_NAMES[i]):
            return i
    return -1


cdef const char *policy_name(int policy) noexcept nogil:
    return POLICY_NAMES[policy]


cdef const char *maxmemory_human(ServerContext *context) noexcept nogil:
    """INFO's maxmemory_human, as Redis's bytesToHuman: ``0B``, ``1000B``, ``64.00M``."""
    cdef double value = <double>context.memory.maxmemory
    cdef const char *units = b"BKMGTP"
    cdef int unit = 0
    if context.memory.maxmemory < 1024:
        snprintf(HUMAN, sizeof(HUMAN), b"%lluB", <unsigned long long>context.memory.maxmemory)
        return HUMAN
    while value >= 1024 and unit < 5:
        value /= 1024
        unit += 1
    snprintf(HUMAN, sizeof(HUMAN), b"%.2f%c", value, units[unit])
    return HUMAN


cdef int memory_configure(ServerContext *context, size_t maxmemory, int policy) noexcept nogil:
    """Apply maxmemory and maxmemory-policy (at start and by CONFIG SET): keep
    the store's metadata byte only for an LRU/LFU policy with a limit set
    (starting every key afresh when the kind changes). Returns 0, or -1
    (ENOMEM for the metadata; nothing changes)."""
    cdef bint lru = policy == POLICY_ALLKEYS_LRU or policy == POLICY_VOLATILE_LRU
    cdef bint lfu = policy == POLICY_ALLKEYS_LFU or policy == POLICY_VOLATILE_LFU
    cdef bint keep = maxmemory != 0 and (lru or lfu)
    if not keep or lru != context.memory.lru or lfu != context.memory.lfu:
        store_set_metadata(&context.store, False, 0)
        context.memory.lru = context.memory.lfu = False
    if keep and not context.store.meta_enabled:
        if store_set_metadata(&context.store, True,
                              LFU_INITIAL if lfu else context.memory.lru_clock) < 0:
            return -1
        context.memory.lru, context.memory.lfu = lru, lfu
    context.memory.maxmemory = maxmemory
    context.memory.policy = <MaxmemoryPolicy>policy
    context.memory.pool_count = 0
    context.memory.decay_minute = <int64_t>time(NULL) // 60      # the first pass a minute from now
    context.memory.decay_cursor = 0
    if context.memory.random == 0:
        context.memory.random = <uint64_t>time(NULL) * 0x9E3779B97F4A7C15ULL | 1
    if maxmemory == 0:
        context.store.resize_limit = context.expires.resize_limit = SIZE_MAX
    return 0


cdef size_t memory_used(ServerContext *context) noexcept nogil:
    """INFO's used_memory: tables, metadata, deadlines, WATCH's table, connections."""
    return (store_memory_bytes(&context.store) + store_memory_bytes(&context.expires)
            + store_memory_bytes(&context.watched) + context.memory.client_bytes + context.memory.fixed_bytes)


cdef size_t memory_peak(ServerContext *context) noexcept nogil:
    """INFO's used_memory_peak: the most used memory seen, noted before each
    command that may add memory while maxmemory is set (so after every
    write's effect) and whenever INFO asks."""
    cdef size_t used = memory_used(context)
    if used > context.memory.peak_used:
        context.memory.peak_used = used
    return context.memory.peak_used


cdef inline bint is_over(ServerContext *context) noexcept nogil:
    """Over the limit, counting the next table of the keys and of the
    deadlines a new key (with a TTL) would make grow."""
    return (memory_used(context) + store_growth_bytes(&context.store) + store_growth_bytes(&context.expires)
            > context.memory.maxmemory)


cdef bint memory_admit(ServerContext *context, Session *session) noexcept nogil:
    """Before a command that may add memory, with maxmemory set: evict while
    over the limit (at most EVICT_BUDGET keys), then say whether it may run:
    True if not over, or if some key could be evicted (the next writes
    evict further, as Redis lets a command run once eviction progresses);
    False (reply -OOM) if over and nothing could be evicted."""
    cdef size_t limit = context.memory.maxmemory
    cdef size_t used = memory_used(context)
    cdef size_t others = used - store_memory_bytes(&context.store)
    cdef int evicted = 0
    memory_peak(context)
    context.store.resize_limit = limit - others if limit > others else 0
    others = used - store_memory_bytes(&context.expires)
    context.expires.resize_limit = limit - others if limit > others else 0
    if context.memory.lfu:
        decay_step(context)
    while evicted < EVICT_BUDGET and is_over(context):
        if not evict_one(context, session):
            break
        evicted += 1
    return evicted > 0 or not is_over(context)


cdef void decay_step(ServerContext *context) noexcept nogil:
    """LFU's aging: start a pass once a minute, and lower DECAY_STEP more
    counters of the main table by one (see the module docstring)."""
    cdef int64_t minute = <int64_t>time(NULL) // 60
    cdef uint8_t *meta = context.store.main.meta
    cdef size_t slot, capacity = context.store.main.capacity
    cdef int _step
    if context.memory.decay_cursor == 0 and minute != context.memory.decay_minute:
        context.memory.decay_minute = minute
        context.memory.decay_cursor = capacity
    if context.memory.decay_cursor > capacity:      # the table was resized meanwhile
        context.memory.decay_cursor = capacity
    if meta == NULL:
        return
    for _step in range(DECAY_STEP):
        if context.memory.decay_cursor == 0:
            return
        context.memory.decay_cursor -= 1
        slot = context.memory.decay_cursor
        if meta[slot] > 0:
            meta[slot] -= 1


cdef bint evict_one(ServerContext *context, Session *session) noexcept nogil:
    """Remove one key chosen by the policy, as a logged delete through the
    keyspace layer (WATCH sees it, the log records it, as Redis propagates a
    DEL). False if no key could be chosen or the log cannot take the delete."""
    cdef MaxmemoryPolicy policy = context.memory.policy
    cdef int64_t key
    cdef uint8_t *meta
    cdef bint found
    if policy == POLICY_NOEVICTION or keyspace_begin_write(context, 1) != 0:
        return False
    if policy == POLICY_ALLKEYS_RANDOM:
        found = store_sample(&context.store, memory_random(context), &key, &meta)
    elif policy == POLICY_VOLATILE_RANDOM:
        found = store_sample(&context.expires, memory_random(context), &key, &meta)
    else:
        found = pool_pick(context, &key)
    if not found or not keyspace_drop(context, key):
        return False
    context.counters[<int>COUNTER_EVICTED_KEYS] += 1
    return True


cdef inline bint is_volatile_policy(ServerContext *context) noexcept nogil:
    return context.memory.policy >= POLICY_VOLATILE_LRU


cdef bint score_now(ServerContext *context, int64_t key, uint64_t *score) noexcept nogil:
    """How evictable ``key`` is now (higher: sooner), by the policy: its age
    on the LRU clock, 255 less its LFU counter, or (volatile-ttl) how soon
    its deadline comes. False if it is no candidate any more (gone, or
    without a TTL under a volatile policy)."""
    cdef int64_t *value
    cdef int64_t *deadline = NULL
    cdef uint8_t *meta
    if is_volatile_policy(context):
        deadline = store_lookup(&context.expires, key)
        if deadline == NULL:
            return False
        if context.memory.policy == POLICY_VOLATILE_TTL:
            score[0] = UINT64_MAX - <uint64_t>deadline[0]
            return store_lookup(&context.store, key) != NULL
    value = store_lookup(&context.store, key)
    if value == NULL:
        return False
    meta = store_meta_of(&context.store, value)
    if meta == NULL:
        score[0] = 0
    elif context.memory.lfu:
        score[0] = 255 - meta[0]
    else:
        score[0] = <uint8_t>(context.memory.lru_clock - meta[0])
    return True


cdef void pool_offer(ServerContext *context, int64_t key, uint64_t score) noexcept nogil:
    """Put a sampled key in the pool (sorted by score, the best last) if it
    beats the worst there or the pool has room; a key already in it is skipped."""
    cdef EvictionCandidate *pool = context.memory.pool
    cdef size_t count = context.memory.pool_count, i, at
    for i in range(count):
        if pool[i].key == key:
            return
    if count == POOL_SIZE:
        if score <= pool[0].score:
            return
        for i in range(count - 1):          # drop the worst
            pool[i] = pool[i + 1]
        count -= 1
    at = count
    while at > 0 and pool[at - 1].score > score:
        pool[at] = pool[at - 1]
        at -= 1
    pool[at].key = key
    pool[at].score = score
    context.memory.pool_count = count + 1


cdef bint pool_pick(ServerContext *context, int64_t *key) noexcept nogil:
    """allkeys-lru/lfu and volatile-lru/lfu/ttl: sample SAMPLES keys (from
    the keys, or from the deadlines for a volatile policy) into the pool,
    then take the best candidate still there whose score has not dropped
    since it was pooled (a key used meanwhile is dropped from the pool)."""
    cdef int64_t sampled
    cdef uint8_t *meta
    cdef uint64_t score
    cdef int _sample
    cdef EvictionCandidate best
    for _sample in range(SAMPLES):
        if not store_sample(&context.expires if is_volatile_policy(context) else &context.store,
                            memory_random(context), &sampled, &meta):
            continue
        if score_now(context, sampled, &score):
            pool_offer(context, sampled, score)
    while context.memory.pool_count > 0:
        context.memory.pool_count -= 1
        best = context.memory.pool[context.memory.pool_count]
        if not score_now(context, best.key, &score) or score < best.score:
            continue
        key[0] = best.key
        return True
    return False
