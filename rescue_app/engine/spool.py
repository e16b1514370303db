"""A bounded local copy of chunks as a store gave them (compressed, sealed).

A restore checks every chunk it needs before its first write to the target
(restore.py, ``check_first``). Over a network store that check would fetch
the image twice; the chunks it fetched are kept here instead, up to a byte
budget, and ``Repository.get_chunk`` takes them from here (and checks them
again: the spool is as untrusted as the store). Chunks beyond the budget are
checked and dropped, and fetched again when written.

The spool is one unlinked temporary file in the scratch folder (tmpfs in the
rescue system, so RAM): it disappears with the process, also when killed.
Never touches a disk device or the repository.
"""

from __future__ import annotations

import os
import tempfile
import threading

# Of the scratch folder's free space, the most the spool may take: the rest
# is for everything else the rescue system keeps there (mount points, logs).
SPOOL_SHARE = 0.5


def spool_budget(folder: str | None = None) -> int:
    """Bytes a spool in ``folder`` (default: the temporary folder) may hold."""
    st = os.statvfs(folder or tempfile.gettempdir())
    return int(st.f_bavail * st.f_frsize * SPOOL_SHARE)


class ChunkSpool:
    """Stored chunks by id, in one temporary file, at most ``budget`` bytes."""

    def __init__(self, budget: int, folder: str | None = None) -> None:
        self.budget = budget
        self._fd, path = tempfile.mkstemp(prefix="liferaft-spool-", dir=folder)
        os.unlink(path)  # gone with the process, also when it is killed
        self._index: dict[str, tuple[int, int]] = {}
        self._end = 0
        self._lock = threading.Lock()
        self.kept = 0  # chunks kept
        self.dropped = 0  # chunks checked but over the budget

    def keep(self, digest: str, blob: bytes) -> bool:
        """Keep one chunk's stored bytes; False when the budget is spent."""
        with self._lock:
            if digest in self._index:
                return True
            if self._end + len(blob) > self.budget:
                self.dropped += 1
                return False
            at = self._end
            self._end += len(blob)
        os.pwrite(self._fd, blob, at)
        with self._lock:
            self._index[digest] = (at, len(blob))
            self.kept += 1
        return True

    def take(self, digest: str) -> bytes | None:
        """The stored bytes of a kept chunk, else None."""
        entry = self._index.get(digest)
        if entry is None:
            return None
        at, length = entry
        return os.pread(self._fd, length, at)

    @property
    def size(self) -> int:
        return self._end

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
