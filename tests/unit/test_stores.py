"""One contract suite for every SessionStore implementation."""

import numpy as np
import pytest

from stream_rec.core.events import Event
from stream_rec.core.seams import SessionStore
from stream_rec.core.session import SessionPolicy, SessionState, apply_event
from stream_rec.runtime.partitioned_store import PartitionedSessionDB
from stream_rec.runtime.stores import MemoryStore, RocksDictStore


@pytest.fixture(params=["memory", "rocksdict", "partitioned"])
def store(request, tmp_path):
    if request.param == "memory":
        s = MemoryStore()
    elif request.param == "rocksdict":
        s = RocksDictStore(tmp_path / "db")
    else:  # one partition of the direct engine's tables
        s = PartitionedSessionDB(tmp_path / "tables").store(3)
    yield s
    s.close()


def _state(n):
    s = SessionState.empty()
    for i in range(n):
        event = Event(f"e{i}", "u", "click", i, item_id=f"i{i}")
        s = apply_event(s, event, SessionPolicy(), offset=i)
    return s


def test_is_a_session_store(store):
    assert isinstance(store, SessionStore)


def test_put_get_round_trip(store):
    assert store.get("nobody") is None
    store.put("u1", _state(3))
    got = store.get("u1")
    np.testing.assert_array_equal(got.item_hashes, _state(3).item_hashes)
    assert got.last_offset == 2


def test_overwrite_delete_and_listing(store):
    store.put("u1", _state(1))
    store.put("u1", _state(2))
    store.put("ü-2", _state(1))
    assert len(store.get("u1")) == 2
    assert sorted(store.users()) == ["u1", "ü-2"] and len(store) == 2
    store.delete("u1")
    assert store.get("u1") is None and len(store) == 1


def test_rocksdict_state_survives_reopen(tmp_path):
    s = RocksDictStore(tmp_path / "db")
    s.put_many([("a", _state(2)), ("b", _state(4))])
    s.close()
    again = RocksDictStore(tmp_path / "db")
    assert len(again.get("b")) == 4 and len(again) == 2
    again.close()
