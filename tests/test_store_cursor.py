"""The store's SCAN cursor (store_scan) and frozen-view iterator (store_iterator_*).

A full scan must return every key present from its first step to its last,
whatever happens between steps (inserts, deletes, growth, shrinking, migration
between the two tables), and only keys present when their step ran. The cursor
is a hash value, so a full scan returns a key at most once: that is asserted
too, as the design promises it (Redis's contract allows duplicates).
"""
import random

import pytest
from hypothesis import event, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from kvfast._store import IntStore

INT64_MIN = -2**63
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1
EXTREMES = [0, -1, 1, INT64_MIN, INT64_MAX, INT64_MIN + 1, INT64_MAX - 1]

keys = st.one_of(st.sampled_from(EXTREMES), st.integers(-300, 300), st.integers(INT64_MIN, INT64_MAX))


def full_scan(store, count):
    """Every key of a full scan in the order returned, and the number of steps."""
    cursor, returned, steps = 0, [], 0
    while True:
        cursor, found = store.scan(cursor, count)
        returned += found
        steps += 1
        if cursor == 0:
            return returned, steps


def start_resize(store, first_key=10_000_000):
    """Insert keys until a growth starts, so both tables hold keys; returns them."""
    added = []
    while not store.stats()["resizing"]:
        store.put(first_key + len(added), 1)
        added.append(first_key + len(added))
    return added


class ScanWhileChanging(RuleBasedStateMachine):
    """Scan steps of random sizes interleaved with inserts, deletes and bulk loads
    and unloads that grow and shrink the table, and idle migration steps."""

    def __init__(self):
        super().__init__()
        self.store = IntStore()
        self.model = set()
        self.cursor = None             # None: no scan in progress
        self.present_throughout = set()
        self.returned = []

    @initialize(count=st.integers(0, 10_000), step=st.integers(1, 5), growing=st.booleans())
    def load(self, count, step, growing):
        """Start from a table of up to 10k keys, mid-growth or not, and a scan's first step."""
        self.insert_range(-count, count, step)
        if growing and count:
            self.insert_until_growing(10**6)
        self.scan_step(1)

    # Changes

    @rule(key=keys)
    def insert(self, key):
        assert self.store.put(key, 7) == (key not in self.model)
        self.model.add(key)

    @rule(key=keys)
    def delete(self, key):
        assert self.store.delete(key) == (key in self.model)
        self.model.discard(key)
        self.present_throughout.discard(key)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def delete_present(self, data):
        key = data.draw(st.sampled_from(sorted(self.model)))
        assert self.store.delete(key)
        self.model.discard(key)
        self.present_throughout.discard(key)

    @rule(start=st.integers(-20_000, 20_000), count=st.integers(1, 5000), step=st.integers(1, 5))
    def insert_range(self, start, count, step):
        added = {start + i * step for i in range(count)}
        assert self.store.put_range(start, count, step) == len(added - self.model)
        self.model |= added

    @precondition(lambda self: self.model)
    @rule(start=st.integers(-20_000, 20_000), count=st.integers(1, 5000), step=st.integers(1, 5))
    def delete_range(self, start, count, step):
        removed = {start + i * step for i in range(count)}
        assert self.store.delete_range(start, count, step) == len(removed & self.model)
        self.model -= removed
        self.present_throughout -= removed

    @rule(start=st.integers(-20_000, 20_000))
    def insert_until_growing(self, start):
        """Insert start, start+1, ... until a growth is under way (both tables hold keys)."""
        key = start
        while not self.store.stats()["draining_capacity"]:
            self.store.put(key, 7)
            self.model.add(key)
            key += 1

    @precondition(lambda self: self.model)
    @rule(seed=st.randoms(use_true_random=False))
    def delete_until_shrinking(self, seed):
        """Delete present keys at random until a shrink is under way (or the store is empty)."""
        doomed = sorted(self.model)
        seed.shuffle(doomed)
        for key in doomed:
            if self.store.stats()["draining_capacity"]:
                break
            assert self.store.delete(key)
            self.model.discard(key)
            self.present_throughout.discard(key)

    @rule(times=st.integers(1, 20))
    def migrate_idle(self, times):
        for _ in range(times):
            if not self.store.migrate_idle():
                break

    # Scanning

    @rule(count=st.integers(1, 200), steps=st.integers(1, 10))
    def scan_steps(self, count, steps):
        for _ in range(steps):
            self.scan_step(count)

    def scan_step(self, count):
        if self.cursor is None:
            self.cursor = 0
            self.present_throughout = set(self.model)
            self.returned = []
        if self.store.stats()["draining_capacity"]:
            event("a scan step while both tables hold keys")
        self.cursor, found = self.store.scan(self.cursor, count)
        assert set(found) <= self.model, "a key returned that is not in the store"
        self.returned += found
        if self.cursor == 0:
            self.check_finished_scan()

    def check_finished_scan(self):
        missed = self.present_throughout - set(self.returned)
        assert not missed, f"{len(missed)} keys present all along were not returned, e.g. {sorted(missed)[:5]}"
        assert len(self.returned) == len(set(self.returned)), "a key was returned twice"
        event(f"a full scan of at least {10 ** len(str(len(self.present_throughout))) // 10} keys ended")
        self.cursor = None

    def teardown(self):
        while self.cursor is not None:
            self.scan_step(50)
        assert sorted(self.store.keys()) == sorted(self.model)
        self.store.check_invariants()


TestScanWhileChanging = ScanWhileChanging.TestCase
TestScanWhileChanging.settings = settings(max_examples=100, stateful_step_count=80, deadline=None)


def test_empty_store():
    store = IntStore()
    for count in (1, 10, 1000):
        assert store.scan(0, count) == (0, [])
    assert store.scan(12345, 3) == (0, [])
    assert store.keys() == []
    store.put_range(1, 100)
    store.delete_range(1, 100)
    assert full_scan(store, 5)[0] == [] and store.keys() == []


def test_key_zero_alone_and_among_others():
    store = IntStore()
    store.put(0, 9)
    assert store.scan(0, 1) == (0, [0])           # no table yet: one step covers every hash
    assert store.keys() == [0]
    store.put_range(1, 1000)
    for count in (1, 7, 100, 5000):
        returned, _ = full_scan(store, count)
        assert sorted(returned) == list(range(1001))
    assert sorted(store.keys()) == list(range(1001))


def test_extreme_keys():
    store = IntStore()
    for key in EXTREMES:
        store.put(key, key)
    for count in (1, 2, 3, 50):
        returned, _ = full_scan(store, count)
        assert sorted(returned) == sorted(EXTREMES)
    assert sorted(store.keys()) == sorted(EXTREMES)


@pytest.mark.parametrize("count", [1, 3, 10, 64, 200, 10**6])
def test_full_scan_without_changes_returns_each_key_once_in_capacity_over_count_steps(count):
    rng = random.Random(count)
    store = IntStore()
    model = {rng.randint(INT64_MIN, INT64_MAX) for _ in range(20_000)} | set(EXTREMES)
    for key in model:
        store.put(key, 1)
    while store.migrate_idle():
        pass
    returned, steps = full_scan(store, count)
    assert len(returned) == len(set(returned)) == len(model)
    assert set(returned) == model
    capacity = store.stats()["capacity"]
    assert steps == -(-capacity // count)         # each step covers exactly `count` home slots


def test_full_scan_during_a_resize_returns_each_key_once():
    store = IntStore()
    store.put_range(1, 30_000)
    model = set(range(1, 30_000)) | set(start_resize(store, 1_000_000)) | {30_000}
    store.put(0, 0)
    model.add(0)
    assert store.stats()["draining_capacity"]      # both tables hold keys
    for count in (1, 13, 500):
        returned, _ = full_scan(store, count)
        assert len(returned) == len(set(returned)) and set(returned) == model
    assert store.stats()["draining_capacity"]      # scanning migrates nothing


def test_iteration_returns_each_key_once_including_during_resizes():
    store = IntStore()
    for key in (0, INT64_MIN, INT64_MAX):
        store.put(key, 1)
    store.put_range(1, 50_000)
    model = {0, INT64_MIN, INT64_MAX, *range(1, 50_001)}
    model |= set(start_resize(store))
    assert store.stats()["draining_capacity"]      # growing: both tables hold keys
    listed = store.keys()
    assert len(listed) == len(model) and set(listed) == model
    while store.migrate_idle():
        pass
    key = 1
    while not store.stats()["draining_capacity"]:  # delete until a shrink starts
        assert store.delete(key)
        model.discard(key)
        key += 1
    listed = store.keys()
    assert len(listed) == len(model) and set(listed) == model


def test_scan_across_growth_shrink_and_migration_misses_nothing():
    """A slow scan (count 1) while the table grows to 16x, migrates, shrinks
    back and migrates again: the keys present throughout all come back once."""
    store = IntStore()
    store.put_range(0, 5000)                       # key 0 included
    kept = set(range(0, 5000, 2))
    returned = []
    cursor, found = store.scan(0, 1)
    returned += found
    phases = [lambda: store.put_range(100_000, 80_000),
              lambda: store.migrate_idle(),
              lambda: store.delete_range(100_000, 80_000),
              lambda: store.delete_range(1, 2500, 2),
              lambda: store.migrate_idle(),
              lambda: store.put_range(-50_000, 3000, 3)]
    resizing_steps = 0
    step = 0
    while cursor != 0:
        if step % 40 == 0 and step // 40 < len(phases):
            phases[step // 40]()
        resizing_steps += bool(store.stats()["draining_capacity"])
        cursor, found = store.scan(cursor, 1)
        assert all(key in store for key in found)
        returned += found
        step += 1
    assert kept <= set(returned)
    assert len(returned) == len(set(returned))
    assert resizing_steps > 0
    assert store.stats()["resizes"] >= 3


def test_any_cursor_is_valid_and_the_last_hash_ends_the_scan():
    store = IntStore()
    store.put_range(1, 10_000)
    next_cursor, found = store.scan(UINT64_MAX, 10)
    assert next_cursor == 0 and len(found) <= 1
    for cursor in (1, 2**63, 2**64 - 2**40, 123456789):
        next_cursor, found = store.scan(cursor, 10)
        assert next_cursor == 0 or next_cursor > cursor
        assert set(found) <= set(range(1, 10_001))
    # A scan from any cursor on covers that cursor's hash suffix, whatever the
    # step sizes: from the fifth cursor of a scan by 100s, steps of 7 return
    # what the rest of the scan by 100s returns.
    cursors, found_from = [0], {}
    while True:
        next_cursor, found = store.scan(cursors[-1], 100)
        found_from[cursors[-1]] = found
        if next_cursor == 0:
            break
        cursors.append(next_cursor)
    start = cursors[4]
    by_sevens, cursor = [], start
    while True:
        cursor, found = store.scan(cursor, 7)
        by_sevens += found
        if cursor == 0:
            break
    assert sorted(by_sevens) == sorted(key for c in cursors[4:] for key in found_from[c])
    assert sorted(key for c in cursors for key in found_from[c]) == list(range(1, 10_001))


def test_clear_during_a_scan_ends_it_cleanly():
    store = IntStore()
    store.put_range(1, 10_000)
    cursor, _ = store.scan(0, 10)
    store.clear()
    assert store.scan(cursor, 10) == (0, [])
    store.put_range(1, 10)
    cursor, found = store.scan(cursor, 10**6)
    assert cursor == 0 and set(found) <= set(range(1, 11))
