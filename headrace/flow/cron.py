"""Cron ticks of a schedule trigger as UTC instants: the pure time arithmetic, no I/O.

A schedule is read on the wall clock of its time zone (croniter iterates naive local
times, where daylight saving does not exist), and each wall-clock tick becomes one UTC
instant, which is the tick's identity:

- a wall-clock time that does not exist (spring forward, e.g. 02:30 on the last Sunday
  of March in Europe/Paris) fires once, at the instant the clocks change (03:00 CEST):
  a nightly `0 2 * * *` job still runs that night;
- a wall-clock time that happens twice (fall back) fires once, at its first occurrence,
  when the cron names its hours (`0 2 * * *` does not run twice that night); with any
  hour (`*/5 * * * *`, `30 * * * *`, `@hourly`) it fires at both occurrences, so the
  schedule keeps its rhythm through the repeated hour instead of pausing for it;
- two wall-clock ticks that land on the same instant (`0 2,3 * * *` on the spring
  forward day) are one tick.

The first occurrences never go backwards as croniter walks the wall clock; second
occurrences (any-hour crons) all fall between the repeated hour's first pass and the
hour after it, which is how `iter_ticks` and `previous_before` place them. Nothing here
reads the clock: callers pass `now`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter

from headrace.errors import HeadraceError

# The largest jump of a zone's offset in one transition (double summer time was 2 h):
# how far back `previous_before` must look when `before` sits in a repeated hour.
_MAX_OFFSET_JUMP = timedelta(hours=3)


# The macros croniter knows, as the fields they stand for (to read their hour field).
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


class CronError(HeadraceError):
    """A cron expression or time zone that croniter or zoneinfo refuses."""


SIX_FIELDS_NEED_SECONDS = (
    "six fields: set `withSeconds: true` and put the seconds first, as Kestra does"
    " (`*/2 * * * * *` is every 2 seconds)"
)


def croniter_form(cron: str, with_seconds: bool = False) -> str:
    """A flow's cron as croniter reads it.

    Flows write Kestra's form: five fields (minute hour day month weekday), or with
    `withSeconds: true` six with the seconds *first*; croniter wants seconds *last*.
    A six-field cron without `withSeconds` is refused rather than read either way: the
    two conventions give different rhythms for the same text. Raises `CronError`.
    """
    text = cron.strip()
    if text.lower() in _MACROS:
        return text
    fields = text.split()
    if with_seconds:
        if len(fields) != 6:
            raise CronError(
                f"withSeconds: true needs six fields, seconds first (second minute hour day"
                f" month weekday), got {len(fields)}"
            )
        return " ".join([*fields[1:], fields[0]])
    if len(fields) == 6:
        raise CronError(SIX_FIELDS_NEED_SECONDS)
    if len(fields) != 5:
        raise CronError(
            f"a cron has five fields (minute hour day month weekday), got {len(fields)}:"
            " or six with `withSeconds: true`, or a macro such as @daily"
        )
    return text


class MissedPolicy(StrEnum):
    """What a schedule does with ticks it missed while no scheduler ran (`recoverMissedSchedules`)."""

    ALL = "ALL"  # fire every missed tick, oldest first
    LAST = "LAST"  # fire only the latest missed tick
    NONE = "NONE"  # fire none of them


def as_utc(instant: datetime) -> datetime:
    if instant.tzinfo is None:
        raise ValueError(f"{instant!r} has no time zone")
    return instant.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class CronSchedule:
    cron: str
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if not croniter.is_valid(self.cron):
            raise CronError(f"invalid cron expression {self.cron!r}")
        try:
            ZoneInfo(self.timezone)
        except (KeyError, ValueError) as exc:
            raise CronError(f"unknown time zone {self.timezone!r}") from exc

    @property
    def fingerprint(self) -> str:
        """What a watermark is kept for: a change of either starts the schedule afresh."""
        return f"{self.cron.strip()} | {self.timezone}"

    @property
    def any_hour(self) -> bool:
        """True when the cron fires in every hour (its hour field is `*`)."""
        fields = _MACROS.get(self.cron.strip().lower(), self.cron).split()
        return len(fields) >= 2 and fields[1] == "*"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)  # zoneinfo caches instances by key

    def wall(self, instant: datetime) -> datetime:
        """The naive wall-clock time of `instant` in the schedule's zone."""
        return as_utc(instant).astimezone(self.zone).replace(tzinfo=None)

    def instant(self, wall: datetime) -> datetime:
        """The UTC instant a naive wall-clock tick fires at (see the module docstring)."""
        first = wall.replace(tzinfo=self.zone, fold=0)
        utc = first.astimezone(UTC)
        if utc.astimezone(self.zone).replace(tzinfo=None) == wall:
            return utc  # exists (fold=0 is the first occurrence when it repeats)
        # In a gap: fold=1 reads it with the offset after the change, fold=0 with the one
        # before; the change lies between the two readings.
        low = wall.replace(tzinfo=self.zone, fold=1).astimezone(UTC)
        high = utc
        if low > high:
            low, high = high, low
        return self._offset_change(low, high)

    def _offset_change(self, low: datetime, high: datetime) -> datetime:
        """The first instant in (low, high] with `high`'s UTC offset (zones change on whole seconds)."""
        target = high.astimezone(self.zone).utcoffset()
        while high - low > timedelta(seconds=1):
            middle = low + (high - low) / 2
            middle = middle.replace(microsecond=0)
            if middle <= low:
                break
            if middle.astimezone(self.zone).utcoffset() == target:
                high = middle
            else:
                low = middle
        return high

    def instants(self, wall: datetime) -> tuple[datetime, ...]:
        """Every instant a wall-clock tick fires at: one, or two in a repeated hour
        of an any-hour cron (the first occurrence, then the second)."""
        first = self.instant(wall)
        if not self.any_hour:
            return (first,)
        second = wall.replace(tzinfo=self.zone, fold=1).astimezone(UTC)
        if second == first or second.astimezone(self.zone).replace(tzinfo=None) != wall:
            return (first,)  # not repeated (or in a spring-forward gap)
        return (first, second)

    def _repeat_length(self, wall: datetime) -> timedelta:
        """How long the clocks go back if `wall` is in a repeated hour, else zero."""
        first = wall.replace(tzinfo=self.zone, fold=0).utcoffset()
        second = wall.replace(tzinfo=self.zone, fold=1).utcoffset()
        assert first is not None and second is not None
        return max(first - second, timedelta(0))

    def iter_ticks(self, after: datetime) -> Iterator[datetime]:
        """Every tick strictly after `after`, ascending, as UTC instants (endless)."""
        after = as_utc(after)
        start = self.wall(after)
        if self.any_hour:
            # In a repeated hour's first pass, walls just before `after` fire again in the
            # second pass, after `after`: start as far back as the clocks go back.
            start -= self._repeat_length(start)
        walls = croniter(self.cron, start)
        last: datetime | None = None
        # Second occurrences wait until the first pass of the repeated hour is over.
        second_pass: list[datetime] = []
        while True:
            try:
                wall = walls.get_next(datetime)
            except CroniterBadDateError as exc:  # e.g. `0 0 30 2 *`: no 30 February
                raise CronError(f"cron {self.cron!r} never fires after {after}") from exc
            first, *second = self.instants(wall)
            while second_pass and second_pass[0] < first:
                tick = second_pass.pop(0)
                if tick > after and tick != last:
                    last = tick
                    yield tick
            if first > after and first != last:
                last = first
                yield first
            second_pass += second

    def next_after(self, after: datetime) -> datetime:
        return next(self.iter_ticks(after))

    def previous_before(self, before: datetime) -> datetime | None:
        """The latest tick strictly before `before` (None if croniter finds none)."""
        before = as_utc(before)
        local = before.astimezone(self.zone)
        start = local.replace(tzinfo=None)
        if local.fold:  # in the second pass of a repeated hour: later walls map earlier
            start += _MAX_OFFSET_JUMP
        walls = croniter(self.cron, start)
        best: datetime | None = None
        for _ in range(1_000_000):
            try:
                wall = walls.get_prev(datetime)
            except (ValueError, OverflowError):  # walked past year 1
                return best
            ticks = self.instants(wall)
            earlier = [tick for tick in ticks if tick < before]
            best = max([*earlier, *([best] if best else [])], default=None)
            # A wall that fires once is later than every second occurrence before it:
            # once one fits, nothing further back can be later.
            if len(ticks) == 1 and best is not None:
                return best
        return best

    def ticks(self, after: datetime, until: datetime, limit: int) -> list[datetime]:
        """Ticks in (after, until], at most `limit` of them (the oldest)."""
        until = as_utc(until)
        found: list[datetime] = []
        if limit <= 0:
            return found
        for tick in self.iter_ticks(after):
            if tick > until:
                break
            found.append(tick)
            if len(found) >= limit:
                break
        return found

    def local_iso(self, tick: datetime) -> str:
        """`tick` as ISO-8601 text with the zone's offset (`2024-03-31T03:00:00+02:00`)."""
        return as_utc(tick).astimezone(self.zone).isoformat()


@dataclass(frozen=True, slots=True)
class DuePlan:
    """What one scheduler pass does for one schedule."""

    fire: list[datetime]  # ticks to publish, ascending
    advance_to: datetime | None  # the new `last_tick` (None: nothing to record)
    skipped_missed: int  # missed ticks the policy drops
    truncated: bool  # more than `limit` ticks were due: the next pass continues
    skipped_late: int = 0  # ticks later than `lateMaximumDelay` (counted up to `limit`)


def plan_due(
    schedule: CronSchedule,
    policy: MissedPolicy,
    last_tick: datetime,
    now: datetime,
    *,
    late_after: timedelta,
    limit: int,
    max_delay: timedelta | None = None,
) -> DuePlan:
    """Which ticks in (last_tick, now] to fire.

    A tick more than `max_delay` old at `now` (`lateMaximumDelay`) never fires, whatever
    the policy (Kestra's rule: a tick not started within that delay is skipped). Of the
    others, one older than `late_after` was missed (the scheduler was down or stalled);
    the policy decides about those. Ticks newer than that are on time and always fire.
    ALL fires at most `limit` per pass, oldest first, and reports truncation.
    """
    now = as_utc(now)
    latest_too_late = _latest_too_late(schedule, last_tick, now, max_delay)
    if latest_too_late is None:
        return _plan_due(schedule, policy, last_tick, now, late_after=late_after, limit=limit)
    too_late = len(schedule.ticks(last_tick, latest_too_late, limit))
    plan = _plan_due(schedule, policy, latest_too_late, now, late_after=late_after, limit=limit)
    advance = max(plan.advance_to or latest_too_late, latest_too_late)
    return DuePlan(plan.fire, advance, plan.skipped_missed, plan.truncated, too_late)


def _latest_too_late(
    schedule: CronSchedule, last_tick: datetime, now: datetime, max_delay: timedelta | None
) -> datetime | None:
    """The latest tick after `last_tick` more than `max_delay` old at `now` (None: none)."""
    if max_delay is None or now - max_delay <= last_tick:
        return None
    latest = schedule.previous_before(now - max_delay)
    return latest if latest is not None and latest > last_tick else None


def _plan_due(
    schedule: CronSchedule,
    policy: MissedPolicy,
    last_tick: datetime,
    now: datetime,
    *,
    late_after: timedelta,
    limit: int,
) -> DuePlan:
    cutoff = now - late_after
    if policy is MissedPolicy.ALL:
        due = schedule.ticks(last_tick, now, limit + 1)
        truncated = len(due) > limit
        fire = due[:limit]
        return DuePlan(fire, fire[-1] if fire else None, 0, truncated)
    # LAST / NONE: count the missed ticks without materialising an unbounded list.
    fire: list[datetime] = []
    latest_missed: datetime | None = None
    missed = 0
    for tick in schedule.iter_ticks(last_tick):
        if tick > now:
            break
        if tick <= cutoff:
            latest_missed = tick
            missed += 1
            if missed > limit:
                # Jump ahead instead of counting years of per-second ticks one by one.
                skip_to = schedule.previous_before(cutoff + timedelta(microseconds=1))
                if skip_to is not None and skip_to > tick:
                    latest_missed = skip_to
                break
        else:
            fire.append(tick)
    if missed > limit:
        # The loop stopped early: the on-time ticks after the jump still fire.
        fire = schedule.ticks(latest_missed, now, limit) if latest_missed else fire
    if policy is MissedPolicy.LAST and latest_missed is not None:
        fire.insert(0, latest_missed)
        skipped = missed - 1
    else:
        skipped = missed
    advance = max([*fire, *([latest_missed] if latest_missed else [])], default=None)
    return DuePlan(fire, advance, skipped, False)
