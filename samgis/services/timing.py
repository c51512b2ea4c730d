"""Stage timings and request deadlines, shared by the services.

`Timer` sums the milliseconds of each named stage of one request (the `timings_ms` of answers);
`within_deadline` bounds a whole request and turns an overrun into `DeadlineExceeded` (504) naming the setting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from samgis.errors import DeadlineExceeded


@dataclass
class Timer:
    """Milliseconds per stage of one request, rounded to 0.01 ms; a stage run several times sums."""

    timings: dict = field(default_factory=dict)

    def add(self, name: str, t0: float) -> float:
        """Adds the time since `time.perf_counter()` instant `t0` to stage `name`; returns now (the next t0)."""
        now = time.perf_counter()
        self.timings[name] = round(self.timings.get(name, 0.0) + (now - t0) * 1000, 2)
        return now

    def total(self, t_start: float) -> None:
        """Sets `total`: the time since `t_start` (the request's start)."""
        self.timings["total"] = round((time.perf_counter() - t_start) * 1000, 2)


def ms(t0: float) -> float:
    """Milliseconds since `time.perf_counter()` instant `t0`, rounded to 0.1 ms."""
    return round((time.perf_counter() - t0) * 1000, 1)


@asynccontextmanager
async def within_deadline(seconds: float | None, setting: str, progress: Callable[[], str] | None = None):
    """Yields the `time.monotonic()` instant tile fetching must keep to (None without a deadline); work
    still running `seconds` after entering is cancelled and `DeadlineExceeded` raised. Tile fetching gets
    a little less time, so that a hanging tile source is named in the 504 rather than the deadline.
    `setting`: the server setting that set `seconds` (named in the 504); `progress()`: words appended to the
    504's message (what the request was doing)."""
    if seconds is None:
        yield None
        return
    start = time.monotonic()
    try:
        async with asyncio.timeout(seconds) as scope:
            yield start + seconds - min(0.1, seconds / 10)
    except TimeoutError:
        if not scope.expired():
            raise
        raise DeadlineExceeded(f"the request did not finish within its deadline of {seconds:g} s "
                               f"(this server's {setting}, SAMGIS_{setting.upper()})"
                               f"{progress() if progress else ''}") from None
