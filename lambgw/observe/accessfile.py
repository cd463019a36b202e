"""The access log written to a file of its own, in batches.

Logging each request as an event of the twistd log costs a noticeable share of a small
request (the event is formatted and written on its own).  :class:`AccessLogFile` keeps the
lines and appends them with one write at most every ``flush_every`` seconds (or sooner
when many are waiting), so a crash loses at most that much of the log.  :meth:`reopen`
starts a new file after the old one was moved away (``logrotate``, on SIGHUP).
"""

from __future__ import annotations

import os

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

log = Logger()

#: Seconds the lines may wait before they are written.
FLUSH_EVERY = 1.0
#: Lines are written at once when this many bytes are waiting.
FLUSH_BYTES = 64 * 1024


class AccessLogFile:
    """Appends access log lines to ``path`` in batches."""

    def __init__(self, path: str, clock: IReactorTime, flush_every: float = FLUSH_EVERY) -> None:
        """Open ``path`` to append to (made with mode 0640); raise ``OSError`` if it cannot be."""
        self.path = path
        self._clock = clock
        self._flush_every = flush_every
        self._lines: list[str] = []
        self._waiting = 0
        self._call: IDelayedCall | None = None
        self._fd = self._open()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def write(self, line: str) -> None:
        """Add one line (without its newline); it is written within ``flush_every`` seconds."""
        self._lines.append(line)
        self._waiting += len(line) + 1
        if self._waiting >= FLUSH_BYTES:
            self.flush()
        elif self._call is None:
            self._call = self._clock.callLater(self._flush_every, self.flush)

    def flush(self) -> None:
        """Write the waiting lines now."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if not self._lines or self._fd < 0:
            return
        data = ("\n".join(self._lines) + "\n").encode("utf-8", "replace")
        self._lines, self._waiting = [], 0
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as e:
            log.warn("Cannot write the access log {path}: {why}", path=self.path, why=str(e))

    def reopen(self) -> None:
        """Write what waits, then go on in a new file at ``path`` (after a rotation)."""
        self.flush()
        fd = self._open()
        os.close(self._fd)
        self._fd = fd

    def close(self) -> None:
        """Write what waits and close the file."""
        self.flush()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
