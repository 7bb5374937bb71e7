"""The adaptive fetch wait: backs off while behind with nothing coming, keeps what works, decays."""

from types import SimpleNamespace

from stream_rec.kafka.fetch_wait import AdaptiveFetchWait


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _consumer(position: int, highwater: int | None, wait_ms: int = 5):
    state = SimpleNamespace(has_valid_position=True, position=position, highwater=highwater)
    assignment = SimpleNamespace(tps=["tp"], state_value=lambda tp: state)
    return SimpleNamespace(
        _fetcher=SimpleNamespace(_fetch_max_wait_ms=wait_ms),
        _subscription=SimpleNamespace(subscription=SimpleNamespace(assignment=assignment)),
    ), state


def test_caught_up_keeps_the_short_wait():
    consumer, _ = _consumer(position=100, highwater=100)
    clock = _Clock()
    fw = AdaptiveFetchWait(consumer, short_ms=5, clock=clock)
    for _ in range(50):
        clock.t += 0.1
        assert fw.update(0) == 5
    assert fw.lag() == 0 and fw.raises == 0


def test_behind_with_empty_answers_doubles_up_to_the_cap_then_keeps_a_working_wait():
    consumer, state = _consumer(position=10, highwater=5000)
    clock = _Clock()
    fw = AdaptiveFetchWait(consumer, short_ms=5, long_ms=80, clock=clock)
    assert fw.update(0) == 5  # not yet a round trip without records
    waits = []
    for _ in range(20):
        clock.t += 0.2
        waits.append(fw.update(0))
    assert waits[:4] == [10, 20, 40, 80] and set(waits[4:]) == {80}
    assert fw.raises == 4
    state.position = 4000
    for _ in range(10):  # records flow again at this wait: it is kept
        clock.t += 0.1
        assert fw.update(256) == 80


def test_records_reset_the_clock_so_a_slow_round_trip_is_not_an_empty_answer():
    consumer, _ = _consumer(position=10, highwater=5000)
    clock = _Clock()
    fw = AdaptiveFetchWait(consumer, short_ms=5, clock=clock)
    for _ in range(100):
        clock.t += 0.01  # below 2 * 5 + 20 ms since the last records
        assert fw.update(0) == 5
        fw.update(3)


def test_a_raised_wait_decays_when_it_is_no_longer_needed():
    consumer, state = _consumer(position=10, highwater=5000)
    clock = _Clock()
    fw = AdaptiveFetchWait(consumer, short_ms=5, long_ms=400, decay_s=30, clock=clock)
    for _ in range(10):
        clock.t += 1.0
        fw.update(0)
    assert fw.wait_ms == 400
    state.position = 5000
    clock.t += 31
    assert fw.update(0) == 300
    for _ in range(40):
        clock.t += 31
        fw.update(0)
    assert fw.wait_ms == 5


def test_a_consumer_without_the_private_attribute_is_left_alone():
    fw = AdaptiveFetchWait(SimpleNamespace(), short_ms=5)
    assert fw.update(0) is None and fw.wait_ms is None and fw.lag() == 0


def test_the_lag_counts_only_the_given_topics():
    from collections import namedtuple

    tp = namedtuple("TP", "topic partition")
    def state(position, highwater):
        return SimpleNamespace(has_valid_position=True, position=position, highwater=highwater)

    states = {tp("events", 0): state(5, 5), tp("changelog", 0): state(0, 900)}
    assignment = SimpleNamespace(tps=list(states), state_value=states.get)
    consumer = SimpleNamespace(
        _fetcher=SimpleNamespace(_fetch_max_wait_ms=5),
        _subscription=SimpleNamespace(subscription=SimpleNamespace(assignment=assignment)),
    )
    assert AdaptiveFetchWait(consumer, short_ms=5).lag() == 900
    clock = _Clock()
    fw = AdaptiveFetchWait(consumer, short_ms=5, clock=clock, topics=frozenset({"events"}))
    assert fw.lag() == 0
    for _ in range(20):  # an idle events topic: the changelog's stale watermark raises nothing
        clock.t += 0.2
        assert fw.update(0) == 5


def test_the_faust_tuner_sets_the_batch_wait_once_the_consumer_exists_and_feeds_it_the_events():
    from stream_rec.settings import Settings
    from topologies.faust_fetch import FetchWaitTuner

    consumer, _ = _consumer(position=100, highwater=100, wait_ms=1500)  # faust's fixed wait
    app = SimpleNamespace(consumer=SimpleNamespace(_thread=SimpleNamespace(_consumer=None)))
    events = [0]
    tuner = FetchWaitTuner(app, Settings(batch_wait_ms=5), lambda: events[0])
    assert tuner.tick() is None and tuner.wait_ms is None  # the consumer is not started yet
    app.consumer._thread._consumer = consumer
    assert tuner.tick() == 5 and consumer._fetcher._fetch_max_wait_ms == 5
    events[0] = 40
    assert tuner.tick() == 5 and tuner.adaptive is not None
    assert tuner._seen == 40  # the events since the last tick went to the adaptive wait
    assert tuner.raises == 0


def test_the_faust_tuner_keeps_fausts_wait_while_the_tables_recover():
    from stream_rec.settings import Settings
    from topologies.faust_fetch import FetchWaitTuner

    consumer, _ = _consumer(position=100, highwater=100, wait_ms=1500)
    app = SimpleNamespace(consumer=SimpleNamespace(_thread=SimpleNamespace(_consumer=consumer)),
                          in_recovery=False)
    tuner = FetchWaitTuner(app, Settings(batch_wait_ms=5), lambda: 0)
    assert tuner.tick() == 5
    app.in_recovery = True  # a rebalance: faust reads the changelogs
    assert tuner.tick() is None and consumer._fetcher._fetch_max_wait_ms == 1500
    assert tuner.tick() is None and consumer._fetcher._fetch_max_wait_ms == 1500
    app.in_recovery = False
    assert tuner.tick() == 5 and consumer._fetcher._fetch_max_wait_ms == 5
