"""Dates as Kestra's expressions format and parse them: Java `DateTimeFormatter` patterns.

Kestra's `date`, `dateAdd` and `now()` take a Java pattern (`yyyy-MM-dd'T'HH:mm:ss`) or
one of Kestra's named formats (`iso`, `sql`, `iso_date_time`, ...; the table is in
`io.kestra.core.runners.pebble.AbstractDate`). This module gives the same text for the
same moment, in English (Kestra's default locale), and refuses with a clear error the
letters whose output depends on a locale's week rules or long zone names, rather than
printing something else.

Pure functions, no clock: the caller passes the moment.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_QUARTERS = ("1st quarter", "2nd quarter", "3rd quarter", "4th quarter")

# Letters Java reserves that depend on the locale's week definition or on long zone
# names: printing ISO or short names instead would be a silently different value.
_LOCALE_LETTERS = {
    "Y": "the week-based year",
    "w": "the week of the year",
    "W": "the week of the month",
    "e": "the localized day of the week",
    "c": "the localized day of the week",
    "F": "the aligned week of the month",
    "B": "the period of the day",
    "g": "the modified Julian day",
}

_Token = tuple[str, int | str]  # ("lit", text) or (letter, count)


class DateFormatError(ValueError):
    """A pattern or a zone that headrace cannot honour exactly as Kestra does."""


# ------------------------------------------------------------ patterns


@lru_cache(maxsize=512)
def compile_pattern(pattern: str) -> tuple[_Token, ...]:
    """The tokens of a Java pattern: literals and (letter, count) fields."""
    tokens: list[_Token] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "'":
            i = _quoted(pattern, i, tokens)
            continue
        if char in "[]":  # optional sections: every field exists when formatting
            i += 1
            continue
        if char in "#{}":
            raise DateFormatError(f"reserved character {char!r} in date pattern {pattern!r}")
        if char.isascii() and char.isalpha():
            end = i
            while end < len(pattern) and pattern[end] == char:
                end += 1
            _check_letter(char, end - i, pattern)
            tokens.append((char, end - i))
            i = end
            continue
        tokens.append(("lit", char))
        i += 1
    return tuple(tokens)


def _quoted(pattern: str, start: int, tokens: list[_Token]) -> int:
    """Append the literal quoted at `start`; return the index after it."""
    if pattern.startswith("''", start):
        tokens.append(("lit", "'"))
        return start + 2
    text: list[str] = []
    i = start + 1
    while i < len(pattern):
        if pattern[i] == "'":
            if pattern.startswith("''", i):
                text.append("'")
                i += 2
                continue
            tokens.append(("lit", "".join(text)))
            return i + 1
        text.append(pattern[i])
        i += 1
    raise DateFormatError(f"unclosed quote in date pattern {pattern!r}")


_MAX_COUNTS = {
    "G": 5, "u": 19, "y": 19, "D": 3, "M": 5, "L": 5, "d": 2, "Q": 5, "q": 5, "E": 5,
    "a": 1, "h": 2, "K": 2, "k": 2, "H": 2, "m": 2, "s": 2, "S": 9, "A": 19, "n": 19,
    "N": 19, "V": 2, "z": 3, "O": 4, "X": 5, "x": 5, "Z": 5,
}  # fmt: skip


def _check_letter(letter: str, count: int, pattern: str) -> None:
    if letter in _LOCALE_LETTERS:
        raise DateFormatError(
            f"date pattern letter {letter!r} ({_LOCALE_LETTERS[letter]}) depends on the "
            f"locale's week rules and is not supported, in {pattern!r}"
        )
    if letter == "z" and count >= 4:
        raise DateFormatError(f"full time-zone names (zzzz) are not supported, in {pattern!r}")
    if letter not in _MAX_COUNTS:
        raise DateFormatError(f"unknown date pattern letter {letter!r} in {pattern!r}")
    if (
        count > _MAX_COUNTS[letter]
        or (letter == "V" and count != 2)
        or (letter == "O" and count not in (1, 4))
    ):
        raise DateFormatError(f"too many pattern letters {letter * count!r} in {pattern!r}")


def format_pattern(moment: datetime, pattern: str) -> str:
    """`moment` as Java's `DateTimeFormatter.ofPattern(pattern)` prints it (English)."""
    parts = []
    for kind, value in compile_pattern(pattern):
        if kind == "lit":
            parts.append(str(value))
        else:
            parts.append(_FIELDS[kind](moment, int(value)))
    return "".join(parts)


def _number(value: int, count: int) -> str:
    return str(value).zfill(count) if value >= 0 else "-" + str(-value).zfill(count)


def _text(names: list[str] | tuple[str, ...], index: int, count: int) -> str:
    name = names[index]
    return name[:3] if count <= 3 else name if count == 4 else name[0]


def _year(moment: datetime, count: int) -> str:
    return f"{moment.year % 100:02d}" if count == 2 else _number(moment.year, count)


def _month(moment: datetime, count: int) -> str:
    return _number(moment.month, count) if count <= 2 else _text(_MONTHS, moment.month - 1, count)


def _quarter(moment: datetime, count: int) -> str:
    quarter = (moment.month - 1) // 3 + 1
    if count <= 2:
        return _number(quarter, count)
    return f"Q{quarter}" if count == 3 else _QUARTERS[quarter - 1] if count == 4 else str(quarter)


def _era(moment: datetime, count: int) -> str:
    return "AD" if count <= 3 else "Anno Domini" if count == 4 else "A"


def _hour12(moment: datetime, count: int) -> str:
    return _number(moment.hour % 12 or 12, count)


def _fraction(moment: datetime, count: int) -> str:
    return f"{moment.microsecond:06d}000"[:count]


def _milli_of_day(moment: datetime, count: int) -> str:
    millis = ((moment.hour * 60 + moment.minute) * 60 + moment.second) * 1000
    return _number(millis + moment.microsecond // 1000, count)


def _nano_of_day(moment: datetime, count: int) -> str:
    seconds = (moment.hour * 60 + moment.minute) * 60 + moment.second
    return _number(seconds * 1_000_000_000 + moment.microsecond * 1000, count)


def _offset_seconds(moment: datetime) -> int:
    delta = moment.utcoffset()
    return 0 if delta is None else int(delta.total_seconds())


def offset_text(seconds: int, with_colon: bool, minutes: str, zero: str) -> str:
    """Java's offset printing: `minutes` is "always", "nonzero" or "never"+seconds."""
    if seconds == 0 and zero:
        return zero
    sign = "+" if seconds >= 0 else "-"
    hours, rest = divmod(abs(seconds), 3600)
    mins, secs = divmod(rest, 60)
    sep = ":" if with_colon else ""
    text = f"{sign}{hours:02d}"
    if minutes == "always" or mins or secs:
        text += f"{sep}{mins:02d}"
    if secs and minutes != "nonzero":
        text += f"{sep}{secs:02d}"
    return text


def offset_id(moment: datetime) -> str:
    """Java's `ZoneOffset.getId()`: `Z`, or `+01:00` (seconds when not zero)."""
    return offset_text(_offset_seconds(moment), True, "always", "Z")


def _offset_x(moment: datetime, count: int, zero: str) -> str:
    seconds = _offset_seconds(moment)
    if count == 1:
        return offset_text(seconds, False, "nonzero", zero)
    return offset_text(seconds, count in (3, 5), "always", zero)


def _offset_z(moment: datetime, count: int) -> str:
    seconds = _offset_seconds(moment)
    if count <= 3:
        return offset_text(seconds, False, "always", "")
    if count == 5:
        return offset_text(seconds, True, "always", "Z")
    return _localized_offset(moment, 4)


def _localized_offset(moment: datetime, count: int) -> str:
    seconds = _offset_seconds(moment)
    if seconds == 0:
        return "GMT"
    if count == 4:
        return "GMT" + offset_text(seconds, True, "always", "")
    sign = "+" if seconds >= 0 else "-"
    hours, rest = divmod(abs(seconds), 3600)
    return f"GMT{sign}{hours}" + (f":{rest // 60:02d}" if rest else "")


def _zone_id(moment: datetime, count: int) -> str:
    zone = moment.tzinfo
    if isinstance(zone, ZoneInfo):
        return zone.key
    return offset_id(moment)


def _zone_name(moment: datetime, count: int) -> str:
    zone = moment.tzinfo
    if isinstance(zone, ZoneInfo):
        return moment.tzname() or zone.key
    seconds = _offset_seconds(moment)
    return "Z" if seconds == 0 else offset_id(moment)


_FIELDS: dict[str, Callable[[datetime, int], str]] = {
    "G": _era,
    "u": _year,
    "y": _year,
    "D": lambda m, n: _number(m.timetuple().tm_yday, n),
    "M": _month,
    "L": _month,
    "d": lambda m, n: _number(m.day, n),
    "Q": _quarter,
    "q": _quarter,
    "E": lambda m, n: _text(_DAYS, m.weekday(), n),
    "a": lambda m, n: "AM" if m.hour < 12 else "PM",
    "h": _hour12,
    "K": lambda m, n: _number(m.hour % 12, n),
    "k": lambda m, n: _number(m.hour or 24, n),
    "H": lambda m, n: _number(m.hour, n),
    "m": lambda m, n: _number(m.minute, n),
    "s": lambda m, n: _number(m.second, n),
    "S": _fraction,
    "A": _milli_of_day,
    "n": lambda m, n: _number(m.microsecond * 1000, n),
    "N": _nano_of_day,
    "V": _zone_id,
    "z": _zone_name,
    "O": _localized_offset,
    "X": lambda m, n: _offset_x(m, n, "Z"),
    "x": lambda m, n: _offset_x(m, n, ""),
    "Z": _offset_z,
}


# ------------------------------------------------------------ Kestra's named formats


def _local_time(moment: datetime) -> str:
    """ISO_LOCAL_TIME: seconds always, the fraction only when not zero, trimmed."""
    text = f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    if moment.microsecond:
        text += "." + f"{moment.microsecond:06d}".rstrip("0")
    return text


def _local_date(moment: datetime) -> str:
    return _number(moment.year, 4) + f"-{moment.month:02d}-{moment.day:02d}"


def _zoned(moment: datetime) -> str:
    text = f"{_local_date(moment)}T{_local_time(moment)}{offset_id(moment)}"
    zone = moment.tzinfo
    return text + f"[{zone.key}]" if isinstance(zone, ZoneInfo) else text


def _instant(moment: datetime) -> str:
    utc = moment.astimezone(UTC)
    text = f"{_local_date(utc)}T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}"
    if utc.microsecond:  # in groups of three digits
        fraction = f"{utc.microsecond:06d}"
        text += "." + (fraction[:3] if fraction.endswith("000") else fraction)
    return text + "Z"


def _rfc_1123(moment: datetime) -> str:
    day = _DAYS[moment.weekday()][:3]
    month = _MONTHS[moment.month - 1][:3]
    offset = offset_text(_offset_seconds(moment), False, "always", "GMT")
    clock = f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    return f"{day}, {moment.day} {month} {moment.year} {clock} {offset}"


def _week_date(moment: datetime) -> str:
    year, week, day = moment.isocalendar()
    return f"{_number(year, 4)}-W{week:02d}-{day}{offset_id(moment)}"


_NAMED: dict[str, Callable[[datetime], str]] = {
    "iso": lambda m: format_pattern(m, "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX"),
    "iso_sec": lambda m: format_pattern(m, "yyyy-MM-dd'T'HH:mm:ssXXX"),
    "sql": lambda m: format_pattern(m, "yyyy-MM-dd HH:mm:ss.SSSSSS"),
    "sql_seq": lambda m: format_pattern(m, "yyyy-MM-dd HH:mm:ss"),
    "iso_date_time": _zoned,
    "iso_zoned_date_time": _zoned,
    "iso_date": lambda m: _local_date(m) + offset_id(m),
    "iso_time": lambda m: _local_time(m) + offset_id(m),
    "iso_offset_time": lambda m: _local_time(m) + offset_id(m),
    "iso_local_date": _local_date,
    "iso_local_time": _local_time,
    "iso_local_date_time": lambda m: f"{_local_date(m)}T{_local_time(m)}",
    "iso_instant": _instant,
    "iso_ordinal_date": lambda m: f"{_number(m.year, 4)}-{m.timetuple().tm_yday:03d}{offset_id(m)}",
    "iso_week_date": _week_date,
    "rfc_1123_date_time": _rfc_1123,
}
_LOCALIZED_STYLES = frozenset({"full", "long", "medium", "short"})

# Kestra's default format (`AbstractDate`: "iso").
DEFAULT_FORMAT = "iso"


def format_moment(moment: datetime, format: str = DEFAULT_FORMAT) -> str:
    """`moment` in a Kestra named format or a Java pattern."""
    if format in _LOCALIZED_STYLES:
        raise DateFormatError(
            f"the localized date style {format!r} depends on the JVM's locale data and is "
            "not supported: write a pattern such as 'yyyy-MM-dd HH:mm'"
        )
    named = _NAMED.get(format)
    return named(moment) if named is not None else format_pattern(moment, format)


def zone(name: str | None) -> tzinfo:
    """Java's `ZoneId.of(name)`; None is UTC (Kestra's servers run in UTC)."""
    if name is None:
        return UTC
    if not isinstance(name, str):
        raise DateFormatError(f"a time zone is text, got {name!r}")
    if name == "Z":
        return UTC
    match = re.fullmatch(r"(?:UTC|GMT|UT)?([+-])(\d{1,2})(?::?(\d{2}))?", name)
    if match:
        sign = 1 if match.group(1) == "+" else -1
        delta = timedelta(hours=int(match.group(2)), minutes=int(match.group(3) or 0))
        return timezone(sign * delta)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise DateFormatError(f"unknown time zone {name!r}") from None


def check_locale(locale: str | None) -> None:
    """Month and day names are English: another locale would print other words."""
    if locale is not None and not str(locale).lower().replace("-", "_").startswith("en"):
        raise DateFormatError(f"only English date names are supported, not locale {locale!r}")


# ------------------------------------------------------------ parsing (existingFormat)


def _parse_rule(letter: str, count: int) -> tuple[str, str]:
    """(group name, regex) for one pattern field when parsing."""
    if letter in "yu":
        return ("year2", r"\d{2}") if count == 2 else ("year", rf"[+-]?\d{{{max(count, 1)},9}}")
    if letter in "ML" and count >= 3:
        names = "|".join(_MONTHS if count == 4 else [m[:3] for m in _MONTHS])
        return "monthname", f"(?i:{names})"
    if letter == "E":
        return "dayname", "(?i:" + "|".join(_DAYS if count == 4 else [d[:3] for d in _DAYS]) + ")"
    if letter == "a":
        return "ampm", "(?i:AM|PM)"
    if letter == "S":
        return "fraction", rf"\d{{{count}}}"
    if letter in "XxZ":
        return "offset", r"Z|[+-]\d{2}(?::?\d{2})?(?::?\d{2})?"
    if letter == "V":
        return "zone", r"[A-Za-z][A-Za-z0-9_/+\-]*"
    fields = {"M": "month", "L": "month", "d": "day", "D": "yearday", "H": "hour", "k": "hour",
              "h": "hour12", "K": "hour12", "m": "minute", "s": "second"}  # fmt: skip
    if letter not in fields:
        raise DateFormatError(f"pattern letter {letter!r} cannot be parsed (existingFormat)")
    return fields[letter], rf"\d{{{count}}}" if count > 1 else r"\d{1,2}"


@lru_cache(maxsize=256)
def _parser(pattern: str) -> re.Pattern[str]:
    parts = []
    seen: set[str] = set()
    for kind, value in compile_pattern(pattern):
        if kind == "lit":
            parts.append(re.escape(str(value)))
            continue
        name, regex = _parse_rule(kind, int(value))
        parts.append(f"(?P<{name}>{regex})" if name not in seen else f"(?:{regex})")
        seen.add(name)
    return re.compile("".join(parts))


def parse_pattern(text: str, pattern: str, default_zone: tzinfo) -> datetime:
    """`text` read with a Java pattern; no zone in it: `default_zone`; no time: midnight."""
    match = _parser(pattern).fullmatch(str(text).strip())
    if match is None:
        raise DateFormatError(f"{text!r} does not match the date pattern {pattern!r}")
    fields = match.groupdict()
    year = int(fields["year"]) if fields.get("year") else 2000 + int(fields.get("year2") or 0)
    month = int(fields["month"]) if fields.get("month") else 1
    if fields.get("monthname"):
        month = _month_number(fields["monthname"])
    hour = int(fields.get("hour") or 0)
    if fields.get("hour12"):
        hour = int(fields["hour12"]) % 12 + (
            12 if (fields.get("ampm") or "").upper() == "PM" else 0
        )
    fraction = (fields.get("fraction") or "0").ljust(6, "0")[:6]
    moment = datetime(year, month, int(fields.get("day") or 1), hour,
                      int(fields.get("minute") or 0), int(fields.get("second") or 0),
                      int(fraction))  # fmt: skip
    if fields.get("yearday"):
        moment = moment.replace(month=1, day=1) + timedelta(days=int(fields["yearday"]) - 1)
    return moment.replace(tzinfo=_parsed_zone(fields, default_zone))


def _month_number(name: str) -> int:
    lowered = name.lower()
    for index, month in enumerate(_MONTHS):
        if month.lower().startswith(lowered[:3]):
            return index + 1
    raise DateFormatError(f"unknown month {name!r}")


def _parsed_zone(fields: dict[str, str | None], default_zone: tzinfo) -> tzinfo:
    if fields.get("zone"):
        return zone(fields["zone"])
    offset = fields.get("offset")
    if offset:
        return zone(offset)
    return default_zone
