"""The int64 hash table against a Python dict, through growth and shrinkage."""
import random

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kvfast._store import IntStore

INT64_MIN = -2**63
INT64_MAX = 2**63 - 1
EXTREMES = [0, -1, 1, INT64_MIN, INT64_MAX, INT64_MIN + 1, INT64_MAX - 1]
MIGRATE_MOVES = 8          # the per-operation budget documented in _store.pyx

keys = st.one_of(st.sampled_from(EXTREMES), st.integers(-300, 300),
                 st.integers(INT64_MIN, INT64_MAX))
values = st.integers(INT64_MIN, INT64_MAX)


class StoreMatchesDict(RuleBasedStateMachine):
    """Random puts, sets, gets, deletes and bulk loads/unloads: the store must
    always answer as a dict does, and its internal invariants must hold."""

    def __init__(self):
        super().__init__()
        self.store = IntStore()
        self.model = {}

    @rule(key=keys, value=values)
    def put(self, key, value):
        assert self.store.put(key, value) == (key not in self.model)
        self.model.setdefault(key, value)

    @rule(key=keys, value=values)
    def set(self, key, value):
        assert self.store.set(key, value) == (key not in self.model)
        self.model[key] = value

    @rule(key=keys)
    def get(self, key):
        assert self.store.get(key) == self.model.get(key)

    @rule(key=keys)
    def delete(self, key):
        assert self.store.delete(key) == (key in self.model)
        self.model.pop(key, None)

    @rule(start=st.integers(-10_000, 10_000), count=st.integers(1, 3000), step=st.integers(1, 7))
    def load_range(self, start, count, step):
        new = sum(1 for i in range(count) if start + i * step not in self.model)
        assert self.store.put_range(start, count, step) == new
        for i in range(count):
            self.model.setdefault(start + i * step, start + i * step)

    @precondition(lambda self: len(self.model) > 0)
    @rule(start=st.integers(-10_000, 10_000), count=st.integers(1, 3000), step=st.integers(1, 7))
    def unload_range(self, start, count, step):
        present = sum(1 for i in range(count) if start + i * step in self.model)
        assert self.store.delete_range(start, count, step) == present
        for i in range(count):
            self.model.pop(start + i * step, None)

    @invariant()
    def same_size(self):
        assert len(self.store) == len(self.model)

    def teardown(self):
        self.store.check_invariants()
        for key, value in self.model.items():
            assert self.store.get(key) == value
        stats = self.store.stats()
        assert stats["max_moved_per_step"] <= MIGRATE_MOVES
        assert stats["forced_drains"] == 0


TestStoreMatchesDict = StoreMatchesDict.TestCase
TestStoreMatchesDict.settings = settings(max_examples=60, stateful_step_count=80, deadline=None)


def test_every_extreme_key_is_storable():
    store = IntStore()
    for index, key in enumerate(EXTREMES):
        assert store.put(key, INT64_MAX - index)
    for index, key in enumerate(EXTREMES):
        assert store.get(key) == INT64_MAX - index
        assert not store.put(key, 5)                # present: value kept
        assert store.get(key) == INT64_MAX - index
    assert len(store) == len(EXTREMES)
    for key in EXTREMES:
        assert store.delete(key)
        assert key not in store
        assert not store.delete(key)
    assert len(store) == 0


def test_grow_to_a_million_random_keys_and_shrink_back():
    """1.2M random keys (extremes included) in and out, checked against a dict,
    with the migration budget respected and the memory per key in range."""
    rng = random.Random(20261127)
    model = {key: ~key for key in EXTREMES}
    while len(model) < 1_200_000:
        key = rng.randint(INT64_MIN, INT64_MAX)
        model[key] = rng.randint(INT64_MIN, INT64_MAX)
    store = IntStore()
    for key, value in model.items():
        assert store.put(key, value)
    assert len(store) == len(model)
    store.check_invariants()
    for key, value in model.items():
        assert store.get(key) == value
    stats = store.stats()
    assert stats["max_moved_per_step"] <= MIGRATE_MOVES
    assert stats["forced_drains"] == 0
    # Between 72% and 90% full once idle, plus the draining table while resizing.
    assert store.memory_bytes / len(store) <= 16 / 0.72 * (2.25 if stats["draining_capacity"] else 1) + 1

    doomed = list(model)
    rng.shuffle(doomed)
    for key in doomed[:-1000]:
        assert store.delete(key)
        del model[key]
    store.check_invariants()
    assert len(store) == len(model) == 1000
    for key, value in model.items():
        assert store.get(key) == value
    assert store.memory_bytes < 1000 * 16 * 10       # shrank: not still sized for 1.2M keys
    assert store.stats()["forced_drains"] == 0


def test_bulk_sequential_growth_to_two_million():
    store = IntStore()
    assert store.put_range(-1_000_000, 2_000_000) == 2_000_000
    store.check_invariants()
    assert store.get(-1_000_000) == -1_000_000 and store.get(999_999) == 999_999
    assert store.get(1_000_000) is None
    assert store.delete_range(-1_000_000, 2_000_000, 2) == 1_000_000
    assert len(store) == 1_000_000
    assert store.get(-999_999) == -999_999 and store.get(-1_000_000) is None
    store.check_invariants()
    assert store.stats()["max_moved_per_step"] <= MIGRATE_MOVES


def test_clear_releases_memory():
    store = IntStore()
    store.put_range(1, 10_000)
    store.put(0, 1)
    store.clear()
    assert len(store) == 0 and store.memory_bytes == 0 and store.get(0) is None
    assert store.put(5, 6) and store.get(5) == 6


@pytest.mark.parametrize("key", EXTREMES)
def test_key_zero_and_extremes_survive_resizes(key):
    """The out-of-line sentinel key and its neighbours stay put across many resizes."""
    store = IntStore()
    store.put(key, 42)
    for round_ in range(3):
        store.put_range(1_000 + round_ * 100_000, 50_000)
        assert store.get(key) == 42
        store.delete_range(1_000 + round_ * 100_000, 50_000)
        assert store.get(key) == 42
    assert len(store) == 1


def test_bulk_load_sized_for_many_then_few_keys_survives_deletes_and_new_keys():
    """Replay sizes the table for every set record of the log at once. A log of
    overwrites leaves it nearly empty: deletes during the load must not start a
    shrink it could not finish in time, and the trim at the end leaves a table of
    normal size that takes new keys at once (regression: this used to loop)."""
    store = IntStore()
    store.begin_bulk_load(1_000_000)
    big = store.memory_bytes
    store.put_range(1, 17)
    store.delete(1)
    store.put_range(100, 41)
    store.end_bulk_load()
    assert len(store) == 57
    assert store.memory_bytes < big // 100
    store.put_range(1000, 20_000)
    assert len(store) == 20_057
    assert store.stats()["forced_drains"] == 0
    store.check_invariants()
    assert [store.get(key) for key in (1, 2, 140, 20_999)] == [None, 2, 140, 20_999]


def test_metadata_bytes_move_with_their_entries():
    """The eviction byte of every key survives inserts (block moves), deletes
    (backward shifts), growth and shrink migrations."""
    rng = random.Random(14)
    store = IntStore()
    store.set_metadata(True, 9)
    expected = {}
    for step in range(60_000):
        key = rng.randrange(1, 40_000)
        if rng.random() < 0.6 or not expected:
            store.set(key, key)
            byte = rng.randrange(256)
            store.set_meta(key, byte)
            expected[key] = byte
        else:
            store.delete(key)
            expected.pop(key, None)
        if step % 5000 == 0:
            store.check_invariants()
    for key, byte in expected.items():
        assert store.meta(key) == byte
    for key in list(expected)[: len(expected) * 9 // 10]:      # shrink
        store.delete(key)
        del expected[key]
    while store.migrate_idle():
        pass
    assert all(store.meta(key) == byte for key, byte in expected.items())
    store.check_invariants()
    assert store.stats()["memory_bytes"] == store.stats()["capacity"] * 17


def test_resize_limit_stops_growth_not_inserts():
    store = IntStore()
    store.put_range(1, 1000)
    capacity = store.stats()["capacity"]
    store.resize_limit = store.memory_bytes          # no room for a next table
    store.put_range(10_000, capacity - 1000 - 1)     # fills beyond 90%, never grows
    assert store.stats()["capacity"] == capacity and not store.stats()["resizing"]
    with pytest.raises(MemoryError):
        store.put(99_999_999, 1)                     # one slot must stay free
    store.check_invariants()
    assert store.sample(12345) is not None
