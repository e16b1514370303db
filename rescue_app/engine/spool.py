"""A bounded local copy of the chunks a restore checked before writing.

A restore checks every chunk it needs before its first write to the target
(restore.py, ``check_first``). Over a network store that check would fetch
the image twice; the chunks it fetched are kept here instead, up to a byte
budget, and ``Repository.get_chunk`` takes them from here. Chunks beyond the
budget are checked and dropped, and fetched again when written.

A chunk is kept in one of two forms. Checked: its bytes as the check
decompressed and hashed them (a plain repository, the spool in memory --
tmpfs, as the rescue system's /tmp -- while they fit in PLAIN_SHARE of the
budget): the writes take them as they are, without decompressing and
hashing every chunk a second time (the check before writing cost a restore
over HTTP 1.77 x its time). The file is unlinked and open in this process
only, so what comes back is what this process wrote after the check, like
its own memory. Stored: the chunk as the store gave it (compressed, sealed),
checked again when taken: an encrypted repository's plaintext never goes to
the temporary folder, and on a disk-backed one writing about twice the bytes
through the filesystem costs more CPU than the second check it saves
(measured, issue 17: 3.1 against 0.7 CPU s per 477 MiB kept; on tmpfs 0.3
against 0.15, and 0.1 against 1.0 taking them back).

The spool is one unlinked temporary file in the scratch folder (tmpfs in the
rescue system, so RAM): it disappears with the process, also when killed.
Never touches a disk device or the repository.
"""

from __future__ import annotations

import os
import tempfile
import threading

from rescue_app.engine.diskscan import read_mountinfo

# Of the scratch folder's free space, the most the spool may take: the rest
# is for everything else the rescue system keeps there (mount points, logs).
SPOOL_SHARE = 0.5
# Of the budget, the most taken by checked bytes (about twice their stored
# size): the rest keeps later chunks stored, so that a small scratch folder
# still saves their second download.
PLAIN_SHARE = 0.5


# Filesystems whose files are memory.
IN_MEMORY = ("tmpfs", "ramfs")


def in_memory(folder: str) -> bool:
    """Whether ``folder`` is on a filesystem in RAM (the rescue system's /tmp)."""
    st = os.stat(folder)
    majmin = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    return any(m.majmin == majmin and m.fstype in IN_MEMORY for m in read_mountinfo())


def spool_budget(folder: str | None = None) -> int:
    """Bytes a spool in ``folder`` (default: the temporary folder) may hold."""
    st = os.statvfs(folder or tempfile.gettempdir())
    return int(st.f_bavail * st.f_frsize * SPOOL_SHARE)


class ChunkSpool:
    """Stored chunks by id, in one temporary file, at most ``budget`` bytes."""

    def __init__(self, budget: int, folder: str | None = None) -> None:
        self.budget = budget
        self._fd, path = tempfile.mkstemp(prefix="liferaft-spool-", dir=folder)
        # the most checked bytes may take (see above): none on a disk
        self._checked_room = budget * PLAIN_SHARE if in_memory(os.path.dirname(path)) else 0
        os.unlink(path)  # gone with the process, also when it is killed
        # digest -> (offset, length, checked bytes rather than stored)
        self._index: dict[str, tuple[int, int, bool]] = {}
        self._end = 0
        self._lock = threading.Lock()
        self.kept = 0  # chunks kept
        self.checked = 0  # of them, kept as checked bytes
        self.dropped = 0  # chunks checked but over the budget

    def keep(self, digest: str, blob: bytes, data: bytes | None = None) -> bool:
        """Keep one chunk: ``data``, its checked bytes, while they fit in
        PLAIN_SHARE of the budget of a spool in memory, else ``blob``, its
        stored bytes; False when the budget is spent."""
        with self._lock:
            if digest in self._index:
                return True
            checked = data is not None and self._end + len(data) <= self._checked_room
            kept = data if checked and data is not None else blob
            if self._end + len(kept) > self.budget:
                self.dropped += 1
                return False
            at = self._end
            self._end += len(kept)
        os.pwrite(self._fd, kept, at)
        with self._lock:
            self._index[digest] = (at, len(kept), checked)
            self.kept += 1
            self.checked += checked
        return True

    def take(self, digest: str) -> bytes | None:
        """The stored bytes of a chunk kept as stored, else None."""
        return self._read(digest, checked=False)

    def take_checked(self, digest: str) -> bytes | None:
        """The bytes of a chunk kept as checked, else None."""
        return self._read(digest, checked=True)

    def _read(self, digest: str, *, checked: bool) -> bytes | None:
        entry = self._index.get(digest)
        if entry is None or entry[2] != checked:
            return None
        at, length, _ = entry
        return os.pread(self._fd, length, at)

    @property
    def size(self) -> int:
        return self._end

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
