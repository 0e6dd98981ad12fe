"""The collector's bookkeeping of topics the broker refused as not authorised
(collector/publisher.py ``Denied``): held in order, one tried again after a wait that
doubles, released when taken, and a reading that left the spool forgotten."""

from __future__ import annotations

from foursave.collector.publisher import DENIED_RETRY_S, Denied


def test_a_refused_topic_is_held_tried_again_later_and_released_when_taken():
    d = Denied()
    assert d.refuse("a", 5, 0.0)  # the first refusal of the topic
    d.hold("a", 7)
    d.hold("a", 6)
    assert d.held["a"] == [5, 6, 7] and d.count == 3
    assert d.due(DENIED_RETRY_S[0] - 1) is None  # it waits
    assert d.due(DENIED_RETRY_S[0]) == 5  # then the oldest is tried
    assert not d.refuse("a", 5, 11.0)  # refused again: the wait doubles
    assert d.delay == 2 * DENIED_RETRY_S[0]
    assert d.due(30.0) is None and d.due(31.0) == 5
    assert d.taken(5) == [6, 7]  # taken: the others go again, the topic is released
    assert "a" not in d and d.delay == DENIED_RETRY_S[0]


def test_a_tried_reading_that_left_the_spool_keeps_its_topic_refused():
    d = Denied()
    d.refuse("a", 5, 0.0)
    d.hold("a", 6)
    assert d.due(10.0) == 5
    d.forget(5)  # dropped at the spool's bound meanwhile
    assert "a" in d and d.held["a"] == [6] and d.probe is None
    assert d.due(10.0) == 6


def test_topics_take_turns_and_a_lost_probe_counts_as_refused():
    d = Denied()
    d.refuse("a", 1, 0.0)
    d.refuse("b", 2, 0.0)
    first = d.due(10.0)
    d.reconnected(10.5)  # its PUBACK went with the connection
    assert d.probe is None and d.due(15.0) is None
    second = d.due(20.5)
    assert {first, second} == {1, 2}  # the other topic's turn
