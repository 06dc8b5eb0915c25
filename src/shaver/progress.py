"""Progress bars for every command: live tqdm bars on a terminal, plain lines elsewhere.

When stderr is a terminal (or a notebook shows widgets), :func:`progress_bar` is a tqdm bar.
When it is not (``shaver demo > log``, CI logs), carriage-return redraws would fill the log,
so the bar is a :class:`LineProgress`: one plain line every :data:`LINE_INTERVAL_S`
seconds, and one when the stage ends. Both take the same arguments and methods (``update``,
``set_postfix``, ``total``, ``close``, ``with``), so callers do not care which they get.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from tqdm.std import tqdm as std_tqdm

#: Seconds between two plain progress lines when stderr is not a terminal.
LINE_INTERVAL_S = 10.0


def live_bars() -> bool:
    """True when stderr is a terminal or tqdm shows notebook widgets (live bars fit)."""
    from tqdm.autonotebook import tqdm as chosen

    if chosen is not std_tqdm:  # a notebook kernel: widgets, not text
        return True
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def progress_bar(*, total: float | None = None, desc: str = "", unit: str = "it",
                 disable: bool = False, leave: bool = True, initial: float = 0,
                 unit_scale: bool = False, **tqdm_options: Any) -> Any:
    """A progress bar: tqdm on a terminal, :class:`LineProgress` otherwise (see the module
    docstring). ``tqdm_options`` (``dynamic_ncols``, ...) only matter to live bars."""
    if live_bars():
        from tqdm.auto import tqdm as auto_tqdm

        return auto_tqdm(total=total, desc=desc, unit=unit, disable=disable, leave=leave,
                         initial=initial, unit_scale=unit_scale, **tqdm_options)
    return LineProgress(total=total, desc=desc, unit=unit, disable=disable, leave=leave,
                        initial=initial, unit_scale=unit_scale)


class LineProgress:
    """A progress bar that writes plain lines to stderr: at most one every ``interval``
    seconds while work goes on, and a last one on :meth:`close` (for ``leave=False`` bars
    only when the work took ``interval`` seconds or more, so short inner stages such as
    one epoch of many stay silent).

    A line reads ``epoch 1/3: 120/500 batch (24%) 12.0s, 10.0 batch/s, loss=0.4512``.
    """

    def __init__(self, *, total: float | None = None, desc: str = "", unit: str = "it",
                 disable: bool = False, leave: bool = True, initial: float = 0,
                 unit_scale: bool = False, interval: float | None = None):
        self.total = total
        self.n = initial
        self.desc, self.unit, self.unit_scale = desc, unit.strip() or "it", unit_scale
        self.disable, self.leave = disable, leave
        self.interval = LINE_INTERVAL_S if interval is None else interval
        self.postfix = ""
        self.lines_written = 0
        self._initial = initial
        self._start = self._last = time.monotonic()
        self._closed = False

    def update(self, n: float = 1) -> None:
        """Count ``n`` more units; write a line when ``interval`` seconds have passed."""
        self.n += n
        now = time.monotonic()
        finished = self.total is not None and self.n >= self.total  # close() says it
        if not self.disable and not finished and now - self._last >= self.interval:
            self._last = now
            self._write(now)

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True,
                    **values: Any) -> None:
        """Extra ``key=value`` items shown at the end of the next line."""
        items = {**(ordered_dict or {}), **values}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        """Free text shown at the end of the next line (tqdm's ``set_postfix_str``)."""
        self.postfix = str(text)

    def close(self) -> None:
        """Write the last line (see the class docstring); later calls do nothing."""
        if self._closed:
            return
        self._closed = True
        now = time.monotonic()
        took_long = self.lines_written or now - self._start >= self.interval
        if not self.disable and (self.leave or took_long):
            self._write(now, done=True)

    def _count(self, value: float) -> str:
        if self.unit_scale and abs(value) >= 1000:
            return std_tqdm.format_sizeof(value)
        return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"

    def line(self, now: float, done: bool = False) -> str:
        """The text of one progress line at time ``now`` (``time.monotonic()``)."""
        elapsed = max(now - self._start, 0.0)
        count = self._count(self.n)
        if self.total and math.isfinite(self.total) and self.total > 0:
            count += f"/{self._count(self.total)} {self.unit} ({100 * self.n / self.total:.0f}%)"
        else:
            count += f" {self.unit}"
        rate = (self.n - self._initial) / elapsed if elapsed > 0 else 0.0
        rate_text = self._count(rate) if self.unit_scale and rate >= 1000 else f"{rate:.1f}"
        parts = [f"{elapsed:.1f}s", f"{rate_text} {self.unit}/s"]
        if self.postfix:
            parts.append(self.postfix)
        head = f"{self.desc}: " if self.desc else ""
        return f"{head}{'done, ' if done else ''}{count} {', '.join(parts)}"

    def _write(self, now: float, done: bool = False) -> None:
        print(self.line(now, done), file=sys.stderr, flush=True)
        self.lines_written += 1

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is not None:  # the work stopped: no 'done' line before the error's own
            self._closed = True
        self.close()
