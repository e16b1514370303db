"""Python logging records kept in memory for the log viewer."""

from __future__ import annotations

import collections
import logging
import threading


class MemoryLogHandler(logging.Handler):
    """Keeps the last ``capacity`` formatted records; safe from any thread."""

    def __init__(self, capacity: int = 5000) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: collections.deque[str] = collections.deque(maxlen=capacity)
        self._lock_lines = threading.Lock()
        self.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        )

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # never let logging break the UI
            line = str(record.msg)
        with self._lock_lines:
            self.records.append(line)

    def lines(self) -> list[str]:
        with self._lock_lines:
            return list(self.records)
