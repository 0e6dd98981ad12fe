"""Request planning: as few reads as possible, never more than 125 registers each."""

from __future__ import annotations

import pytest

from foursave.collector.plan import Span, plan_requests

H, I = 3, 4  # noqa: E741 - holding and input, as in the Modbus spec


@pytest.mark.parametrize(
    ("spans", "max_gap", "expected"),
    [
        pytest.param([Span(H, 0, 2), Span(H, 2, 2)], 0, [Span(H, 0, 4)], id="touching-merge"),
        pytest.param(
            [Span(H, 0, 2), Span(H, 3, 2)], 0, [Span(H, 0, 2), Span(H, 3, 2)], id="gap-kept"
        ),
        pytest.param([Span(H, 0, 2), Span(H, 3, 2)], 1, [Span(H, 0, 5)], id="gap-bridged"),
        pytest.param(
            [Span(H, 0, 2), Span(I, 2, 2)], 5, [Span(H, 0, 2), Span(I, 2, 2)], id="functions-apart"
        ),
        pytest.param(
            [Span(H, 40002, 68), Span(H, 40070, 52)], 0, [Span(H, 40002, 120)], id="sunspec-1+103"
        ),
        pytest.param(
            [Span(H, 0, 100), Span(H, 100, 100)],
            0,
            [Span(H, 0, 100), Span(H, 100, 100)],
            id="limit-125",
        ),
        pytest.param(
            [Span(H, 0, 300)],
            0,
            [Span(H, 0, 125), Span(H, 125, 125), Span(H, 250, 50)],
            id="split-long",
        ),
        pytest.param(
            [Span(I, 0x4A, 2), Span(I, 0, 2), Span(I, 0x34, 2)],
            80,
            [Span(I, 0, 0x4C)],
            id="sdm630-one-read",
        ),
        pytest.param([Span(H, 0, 4), Span(H, 1, 2)], 0, [Span(H, 0, 4)], id="overlap"),
    ],
)
def test_plan(spans, max_gap, expected):
    plan = plan_requests(spans, max_gap=max_gap)
    assert plan == expected
    assert all(s.count <= 125 for s in plan)
    covered = {(s.function, a) for s in plan for a in range(s.address, s.end)}
    assert all((s.function, a) in covered for s in spans for a in range(s.address, s.end))
