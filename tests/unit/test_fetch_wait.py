"""The fetch wait policy: short while records flow, long once quiet."""

from __future__ import annotations

import pytest

from headrace.config import Settings
from headrace.fetch_wait import FetchWait


def policy() -> FetchWait:
    return FetchWait(busy_ms=5, idle_ms=600, quiet_after_s=2.0)


def test_a_new_consumer_starts_busy_and_goes_quiet_after_the_quiet_spell() -> None:
    wait = policy()
    assert wait.after_fetch(False, now=100.0) == 5  # joining, recovering: not quiet yet
    assert wait.after_fetch(False, now=101.9) == 5
    assert wait.after_fetch(False, now=102.0) == 600


def test_records_make_it_busy_at_once_and_the_quiet_spell_starts_again() -> None:
    wait = policy()
    wait.after_fetch(False, now=0.0)
    assert wait.after_fetch(False, now=10.0) == 600
    assert wait.after_fetch(True, now=10.5) == 5
    assert wait.after_fetch(False, now=12.4) == 5
    assert wait.after_fetch(False, now=12.5) == 600


def test_a_steady_trickle_keeps_it_busy() -> None:
    wait = policy()
    for tick in range(100):
        assert wait.after_fetch(tick % 10 == 0, now=tick * 0.15) == 5


@pytest.mark.parametrize(("busy", "idle"), [(0, 600), (10, 5), (-1, -1)])
def test_nonsense_bounds_are_refused(busy: int, idle: int) -> None:
    with pytest.raises(ValueError, match="busy_ms"):
        FetchWait(busy_ms=busy, idle_ms=idle, quiet_after_s=1.0)


def test_only_the_embedded_broker_gets_an_adaptive_wait() -> None:
    embedded = Settings(low_latency=True).fetch_wait()
    kafka = Settings(low_latency=False).fetch_wait()
    assert embedded.busy_ms < embedded.idle_ms
    # Real Kafka answers as soon as records come: one long wait, never slow.
    assert kafka.busy_ms == kafka.idle_ms == 500
    # Each consumer gets its own policy: one consumer's traffic is not another's.
    assert Settings(low_latency=True).fetch_wait() is not embedded
