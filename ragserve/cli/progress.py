"""Progress display: a tqdm bar on a terminal, a few plain lines anywhere else.

A bar redraws itself many times a second; written to a log file or a pipe, every redraw stays
behind as text. So when the stream is not a terminal, ``Progress`` prints a line only when
another tenth of the work is done or ``interval_s`` has passed, plus one at the end.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm

__all__ = ["Progress"]


class Progress:
    """Progress over ``total`` units; ``update(n)`` as work is done, ``close()`` at the end.

    ``write(message)`` prints a line without breaking the bar. ``disable`` hides the progress
    (``write`` still prints). Usable as a context manager.
    """

    def __init__(
        self,
        *,
        total: int,
        desc: str,
        unit: str,
        leave: bool = True,
        disable: bool = False,
        stream: TextIO | None = None,
        interval_s: float = 5.0,
    ) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.n = 0
        self._stream = stream if stream is not None else sys.stderr
        self._disable = disable
        self._interval_s = interval_s
        self._bar: tqdm | None = None
        if not disable and _is_terminal(self._stream):
            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=leave, file=self._stream)
        self._started = self._last_time = time.monotonic()
        self._last_step = 0
        self._printed_n = 0

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
            return
        if self._disable:
            return
        now = time.monotonic()
        step = self.n * 10 // self.total if self.total > 0 else 0
        if step > self._last_step or now - self._last_time >= self._interval_s:
            self._print_line(now, step)

    def write(self, message: str) -> None:
        if self._bar is not None:
            self._bar.write(message, file=self._stream)
        else:
            print(message, file=self._stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif not self._disable and self.n != self._printed_n:
            self._print_line(time.monotonic(), self._last_step)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _print_line(self, now: float, step: int) -> None:
        share = f" ({100 * self.n / self.total:.0f} %)" if self.total > 0 else ""
        print(f"{self.desc}: {self.n}/{self.total} {self.unit}{share}, "
              f"{now - self._started:.1f} s", file=self._stream, flush=True)
        self._last_time, self._last_step, self._printed_n = now, step, self.n


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
