"""The build cache: keys of everything that goes into a layer, outputs renamed
into place only when complete, and one build at a time per cache.

A base root is cached under ``base_key`` (suite, mirror, packages, hooks), the
app layer under ``app_key`` (the base, the profile, the app's sources and the
builder itself); an output whose stamp holds its key is up to date.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from builder.context import (
    APP_SOURCES,
    BASE_HOOK,
    BUILDER_DIR,
    DPKG_EXCLUDES,
    INITRAMFS_HOOK,
    BuildContext,
)
from builder.log import say


def digest(parts: Iterable[str | bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:20]


def tree_digest(paths: Iterable[Path], root: Path) -> list[str | bytes]:
    """Names, modes and contents of every file under ``paths``, in a stable order."""
    parts: list[str | bytes] = []
    for top in paths:
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*"))
        for path in files:
            if "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo"):
                continue
            st = path.lstat()
            parts.append(f"{path.relative_to(root)}:{stat.S_IMODE(st.st_mode):o}")
            if path.is_symlink():
                parts.append(os.readlink(path))
            elif path.is_file():
                parts.append(path.read_bytes())
    return parts


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """A temporary path next to ``final``, renamed onto it only on success."""
    tmp = final.with_name(f".{final.name}.tmp")
    remove(tmp)
    try:
        yield tmp
        if final.is_dir() and not final.is_symlink():
            old = final.with_name(f".{final.name}.old")
            remove(old)
            final.rename(old)
            tmp.rename(final)
            remove(old)
        else:
            tmp.rename(final)
    finally:
        remove(tmp)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@contextlib.contextmanager
def file_lock(path: Path, waiting_for: str) -> Iterator[None]:
    """Held while the block runs (flock on ``path``); a second holder waits,
    saying so, and goes on when the first is done, also when it was killed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for {waiting_for}…")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def build_lock(ctx: BuildContext) -> contextlib.AbstractContextManager[None]:
    """One build at a time per cache: two would fight over the same layers."""
    return file_lock(ctx.cache_dir / ".lock", "another build using the same cache")


# Bump to invalidate every cached base root.
BASE_FORMAT = 1


def base_key(ctx: BuildContext) -> str:
    p = ctx.profile
    return digest(
        [
            f"format={BASE_FORMAT}",
            f"suite={p.suite}",
            f"mirror={p.mirror}",
            f"locale={p.locale}",
            "packages=" + ",".join(sorted(ctx.packages)),
            "dpkg=" + ",".join(DPKG_EXCLUDES),
            f"compression={p.compression}",
            BASE_HOOK.read_bytes(),
            INITRAMFS_HOOK.read_bytes(),
        ]
    )


def python_requirements(repo: Path) -> list[str]:
    import tomllib

    with open(repo / "pyproject.toml", "rb") as f:
        return list(tomllib.load(f)["project"]["dependencies"])


def app_key(ctx: BuildContext, base: str) -> str:
    sources = [ctx.repo / s for s in APP_SOURCES] + [ctx.repo / "overlay"]
    builder_files = sorted(BUILDER_DIR.glob("*.py")) + [BASE_HOOK, INITRAMFS_HOOK]
    return digest(
        [
            f"base={base}",
            ctx.profile.digest_data(),
            *tree_digest(sources, ctx.repo),
            *tree_digest(builder_files, ctx.repo),
        ]
    )


def up_to_date(stamp: Path, key: str, output: Path) -> bool:
    return output.exists() and stamp.exists() and stamp.read_text().strip() == key
