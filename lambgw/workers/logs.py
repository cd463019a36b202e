"""The workers' log events, carried to the supervisor's log as events, not as text.

A worker runs ``twistd --logger lambgw.workers.logs.worker_log_observer``: its events are
written to its stdout as JSON records (twisted.logger's format).  The supervisor reads them
with :class:`LogRelay` and publishes them in its own log, marked with the worker's number,
so one log (the twistd log file, stdout, journald) holds every process's lines in the
usual format.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from twisted.logger import (
    ILogObserver,
    LogLevel,
    eventFromJSON,
    globalLogPublisher,
    jsonFileLogObserver,
)

#: What begins each JSON record (as ``jsonFileLogObserver`` writes them); each ends a line.
RECORD_SEPARATOR = b"\x1e"
#: A record longer than this is dropped, not buffered on and on.
MAX_RECORD = 4 * 1024 * 1024


def worker_log_observer() -> ILogObserver:
    """The log observer of a worker (twistd ``--logger``): JSON records on its stdout."""
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    return jsonFileLogObserver(out)


class LogRelay:
    """Turns a worker's stdout back into log events, published with its number."""

    def __init__(
        self, worker: int, publish: Callable[[dict[str, Any]], None] = globalLogPublisher
    ) -> None:
        """Relay the records of worker number ``worker`` to ``publish``."""
        self._worker = worker
        self._publish = publish
        self._pending = b""

    def feed(self, data: bytes) -> None:
        """Take bytes of the worker's stdout; publish each complete record."""
        records = (self._pending + data).split(b"\n")
        self._pending = records.pop()
        if len(self._pending) > MAX_RECORD:
            self._pending = b""
        for record in records:
            self._relay(record)

    def close(self) -> None:
        """The worker's stdout ended: publish what is left."""
        pending, self._pending = self._pending, b""
        self._relay(pending)

    def _relay(self, record: bytes) -> None:
        text = record.strip(RECORD_SEPARATOR + b" \r\n").decode("utf-8", "replace")
        if not text:
            return
        try:
            event = eventFromJSON(text)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            self.line(text)
            return
        self._mark(event)

    def line(self, text: str) -> None:
        """Publish a line the worker wrote outside its log (on stderr, before logging began)."""
        self._mark(
            {
                "log_format": "{line}",
                "line": text,
                "log_level": LogLevel.warn,
                "log_namespace": "lambgw.workers",
                "log_time": time.time(),
            }
        )

    def _mark(self, event: dict[str, Any]) -> None:
        level = getattr(event.get("log_level"), "name", "info")
        namespace = event.get("log_namespace", "-")
        event["log_system"] = f"worker {self._worker} {namespace}#{level}"
        event["worker"] = self._worker
        self._publish(event)
