"""The one error hierarchy of liferaft.

Every failure a user can cause or meet (bad input, a missing tool, a disk that
vanishes) becomes a LiferaftError with a message that says what happened and,
in ``hint``, what to do. The CLI and the UI print ``str(error)`` as one line;
tracebacks are for ``--debug`` only.
"""

from __future__ import annotations

import sys


class LiferaftError(Exception):
    """Base of all errors the user should see as one clear line."""

    exit_code = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def report(self, program: str) -> int:
        """Print the one line a command-line program shows; its exit status."""
        print(f"{program}: error: {self}", file=sys.stderr)
        return self.exit_code


class UsageError(LiferaftError):
    exit_code = 2


class NotRootError(LiferaftError):
    pass


class ToolMissingError(LiferaftError):
    """A host program is missing; the hint names the Debian package."""


class CommandError(LiferaftError):
    """An external command failed; carries its stderr."""

    def __init__(self, message: str, hint: str = "", stderr: str = "") -> None:
        super().__init__(message, hint)
        self.stderr = stderr


class RepositoryError(LiferaftError):
    """The repository is missing, unreadable, read-only or damaged."""


class ImageNotFoundError(RepositoryError):
    pass


class ManifestError(RepositoryError):
    """A manifest is corrupt, truncated or of an unknown format version."""


class ChunkError(RepositoryError):
    """A stored chunk is missing or its content does not match its hash."""


class DiskError(LiferaftError):
    """A disk cannot be used as asked (mounted, too small, vanished...)."""


class TargetRefusedError(DiskError):
    """A write to this disk is refused: system disk, mounted, too small..."""


class DeviceVanishedError(DiskError):
    pass


class VerifyError(LiferaftError):
    """Data read back does not match what the image says."""


class CancelledError(LiferaftError):
    """The user cancelled a running operation."""

    exit_code = 130  # as a shell reports a command ended by Ctrl-C (128 + SIGINT)
