"""The admission gate of the immediate path: a bound, and strict arrival order."""

from __future__ import annotations

import threading
import time

import pytest

from atm_risk.alerts.service import FairGate


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_at_most_limit_inside_and_waiters_are_let_in_in_arrival_order(limit: int) -> None:
    gate = FairGate(limit)
    inside, most, order = 0, 0, []
    lock = threading.Lock()
    release = threading.Event()

    def visit(name: int) -> None:
        nonlocal inside, most
        with gate:
            with lock:
                inside += 1
                most = max(most, inside)
                order.append(name)
            release.wait(5)
            time.sleep(0.01 * (name % 3))  # leave at different times
            with lock:
                inside -= 1

    threads = []
    for name in range(9):  # arrive one after the other
        t = threading.Thread(target=visit, args=(name,))
        t.start()
        threads.append(t)
        time.sleep(0.02)
    assert order == list(range(limit))  # the rest wait
    release.set()
    for t in threads:
        t.join(5)
    assert most == limit
    # a freed place goes to the longest waiter: admissions keep arrival order up to the
    # few that are let in at the same moment
    for k, name in enumerate(order):
        assert abs(name - k) < limit, order


def test_a_holder_that_comes_straight_back_queues_behind_the_waiters() -> None:
    """The barging a semaphore allows (and that starved reports under load)."""
    gate = FairGate(1)
    order = []
    waiter_queued = threading.Event()

    def waiter() -> None:
        waiter_queued.set()
        with gate:
            order.append("waiter")

    with gate:
        t = threading.Thread(target=waiter)
        t.start()
        waiter_queued.wait(5)
        time.sleep(0.05)  # the waiter is now blocked on the gate
    with gate:  # straight back in: must come after the waiter
        order.append("returner")
    t.join(5)
    assert order == ["waiter", "returner"]


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        FairGate(0)
