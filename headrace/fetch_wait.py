"""How long a fetch may wait at the broker: short while records flow, long once quiet.

The embedded broker holds every fetch for a share of the consumer's `fetch_max_wait_ms`,
whether or not records wait (docs/architecture.md, "Quiet when idle"). A short wait is a
short hop but hundreds of fetches a second per consumer, idle or not; a long wait is a
quiet process but a slow first record. So the wait follows the traffic: short from the
moment records come, long once none came for `quiet_after_s`. The price is paid once per
quiet spell: the first record after it waits up to about half of `idle_ms`.

Pure: the caller says what a fetch returned and when; no Kafka, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class FetchWait:
    busy_ms: int  # while records flow
    idle_ms: int  # once none came for quiet_after_s
    quiet_after_s: float
    _last_records_at: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if not 0 < self.busy_ms <= self.idle_ms:
            raise ValueError(f"want 0 < busy_ms <= idle_ms, got {self.busy_ms}, {self.idle_ms}")

    def after_fetch(self, got_records: bool, now: float) -> int:
        """The wait for the next fetch, after one that returned records or none at `now`."""
        if got_records or self._last_records_at is None:
            # A consumer starts busy: a start-up (joining, recovering) is not a quiet spell.
            self._last_records_at = now
        if now - self._last_records_at >= self.quiet_after_s:
            return self.idle_ms
        return self.busy_ms
