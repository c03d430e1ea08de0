"""Reading Server-Sent Events (the gateway's live streams), one line at a time.

The format (HTML's EventSource): lines `field: value`; a blank line ends an event;
`data` lines join with newlines; lines starting with `:` are comments (keep-alives).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Event:
    event: str
    data: str
    id: str | None = None


@dataclass(slots=True)
class EventParser:
    """Feed it lines (with or without their newline); it gives each event as it ends."""

    _event: str = ""
    _data: list[str] = field(default_factory=list)
    _id: str | None = None

    def feed(self, line: str) -> Event | None:
        line = line.rstrip("\r\n")
        if not line:
            if not self._data and not self._event:
                return None
            done = Event(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data, self._id = "", [], None
            return done
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None
