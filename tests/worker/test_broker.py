"""The queue's messages in a real Redis: start order, moves, removal, and one message after a dead delivery."""

from __future__ import annotations

import pytest

from worker.broker import Broker, enqueue


@pytest.fixture
def broker(queue_env):
    from worker.settings import get_settings

    settings = get_settings()
    return Broker(settings)


def _send(run_id: str, priority: str = "normal") -> None:
    enqueue("train", run_id, {"epochs": 1}, priority)


def _run(n: int) -> str:
    return f"{n:032x}"


def test_positions_follow_priority_then_submission_order(broker):
    for n, priority in ((1, "normal"), (2, "low"), (3, "normal"), (4, "high")):
        _send(_run(n), priority)
    assert broker.positions() == {_run(4): 1, _run(1): 2, _run(3): 3, _run(2): 4}
    assert [m.priority for m in broker.queued()] == ["high", "normal", "normal", "low"]


def test_move_to_the_front_or_back_and_change_priority(broker):
    for n in (1, 2, 3):
        _send(_run(n))
    assert broker.move(_run(3), front=True)
    assert list(broker.positions()) == [_run(3), _run(1), _run(2)]
    assert broker.move(_run(3), front=False)
    assert list(broker.positions()) == [_run(1), _run(2), _run(3)]
    assert broker.move(_run(2), front=False, priority="high")
    assert list(broker.positions()) == [_run(2), _run(1), _run(3)]
    assert broker.find(_run(2)).priority == "high"
    assert not broker.move(_run(9))  # not queued: nothing moves, nothing is created
    assert len(list(broker.queued())) == 3


def test_remove_drops_every_copy_of_a_run(broker):
    _send(_run(1))
    _send(_run(2))
    _send(_run(1))
    assert broker.remove(_run(1)) == 2
    assert list(broker.positions()) == [_run(2)]


def test_a_dead_delivery_is_restored_at_the_front_and_its_late_ack_changes_nothing(broker, queue_env):
    from worker.broker import _producer

    _send(_run(1))
    _send(_run(2))
    # A real kombu consumer takes run 1, as a worker does: it moves to the unacked hash.
    with _producer(queue_env["REDIS_URL"]).connection_for_read() as conn:
        queue = conn.SimpleQueue(broker.settings.queue)
        message = queue.get(timeout=5)
        assert message.payload[0][0] == _run(1)
        assert list(broker.positions()) == [_run(2)] and len(broker.delivered(_run(1))) == 1
        assert broker.ensure_queued("train", _run(1), {}, "normal", grace=3600) == "delivered"  # too fresh to be dead
        assert broker.restore(_run(1), older_than=0)
        assert list(broker.positions()) == [_run(1), _run(2)] and broker.delivered(_run(1)) == []
        message.ack()  # the dead worker's late ack: still one message
        queue.close()
    assert list(broker.positions()) == [_run(1), _run(2)]


def test_ensure_queued_moves_an_existing_message_or_sends_one(broker):
    _send(_run(1))
    _send(_run(2))
    assert broker.ensure_queued("train", _run(2), {"epochs": 1}, "normal", grace=60) == "moved"
    assert list(broker.positions()) == [_run(2), _run(1)]
    assert broker.ensure_queued("train", _run(3), {"epochs": 1}, "normal", grace=60) == "sent"
    assert list(broker.positions()) == [_run(3), _run(2), _run(1)]


def test_foreign_or_pickled_messages_are_ignored_not_fatal(broker):
    broker.r.lpush(broker.settings.queue + ":3", b"\x80\x04not json", '{"body": "e30="}')
    _send(_run(1))
    assert list(broker.positions()) == [_run(1)]
