"""The liferaft Textual application: state shared by the screens, errors, logs.

The App takes its Engine as a constructor argument so tests can point it at
loop devices (or, for snapshots only, at a fake engine). Screens live in
``rescue_app.tui.screens``, one per module; styles in ``app.tcss``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from textual import work
from textual.app import App

from rescue_app.engine import BlockDisk, Engine
from rescue_app.errors import LiferaftError
from rescue_app.tui import keymap
from rescue_app.tui.logbuffer import MemoryLogHandler
from rescue_app.tui.profile import ProfileInfo, load_profile_info
from rescue_app.tui.sources import DiskFilter, RepositorySource

if TYPE_CHECKING:  # the browse code is imported when an image is first browsed
    from rescue_app.engine import ImageMount

log = logging.getLogger("liferaft.tui")


class LiferaftApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "liferaft"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = keymap.APP

    def __init__(
        self,
        engine: Engine,
        *,
        profile: ProfileInfo | None = None,
        media_filter: DiskFilter | None = None,
        log_handler: MemoryLogHandler | None = None,
        scan_media: bool = True,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.profile = profile or ProfileInfo()
        self.title = self.profile.title
        # Which disks the media scan may mount (read-only); None = all but the system's.
        self.media_filter = media_filter
        self.scan_media = scan_media
        self.log_handler = log_handler or install_log_handler()
        self.disks: list[BlockDisk] = []
        self.sources: list[RepositorySource] = []
        self.sources_scanned = False
        self.open_source: RepositorySource | None = None
        # The repository folder or URL last typed, offered again in the next flow.
        self.last_typed_repository = ""
        # Live browse mounts ("Browse files"), each released in a worker when its
        # screen closes, and at the latest when the app ends.
        self.image_mounts: set[ImageMount] = set()
        self._saved_signals: dict[int, Any] = {}

    def on_mount(self) -> None:
        from rescue_app.tui.screens.home import HomeScreen

        # A store that needs a password nobody gave asks here, not on the terminal
        # under the UI (getpass would hang the worker and tear the screen).
        self._ui_thread = threading.get_ident()
        self.engine.ask_passwords_with(self.ask_password)
        self.push_screen(HomeScreen())

    def ask_password(self, who: str) -> str | None:
        """The password of ``who`` typed in a modal; called from a worker thread."""
        from rescue_app.tui.screens.password import PasswordModal

        if threading.get_ident() == getattr(self, "_ui_thread", None):
            return None  # waiting here would freeze the UI
        answered = threading.Event()
        result: list[str | None] = [None]

        def answer(value: str | None) -> None:
            result[0] = value
            answered.set()

        def ask() -> None:
            self.push_screen(PasswordModal(who), callback=answer)

        self.call_from_thread(ask)
        while not answered.wait(0.5):
            if not self.is_running:
                return None
        return result[0]

    # ------------------------------------------------------------ sources

    def scan_filter(self) -> DiskFilter | None:
        """The disk filter for the media scan; rejects every disk when scanning is off."""
        if not self.scan_media:
            return lambda disk: False
        return self.media_filter

    def use_source(self, source: RepositorySource) -> None:
        """Remember the source now open; close (unmount) the one before."""
        if self.open_source is not None and self.open_source is not source:
            self.release_in_worker()
        self.open_source = source

    def release_source(self) -> None:
        """Close (unmount) the open source now: blocking, for workers and the exit."""
        source, self.open_source = self.open_source, None
        _close(source)

    def release_in_worker(self, then: Callable[[], object] | None = None) -> None:
        """Close the open source off the UI thread (an umount can take seconds,
        a network share much longer); ``then`` runs on the UI thread afterwards."""
        source, self.open_source = self.open_source, None
        self._release_worker(source, then)

    @work(thread=True, group="release", exit_on_error=False)
    def _release_worker(
        self, source: RepositorySource | None, then: Callable[[], object] | None
    ) -> None:
        _close(source)
        if then is not None:
            self.call_from_thread(then)

    # ------------------------------------------------------------ image mounts

    def adopt_image_mount(self, mount: ImageMount) -> None:
        """Keep ``mount`` until released (``release_image_mount``, or the exit)."""
        self.image_mounts.add(mount)

    def guard_signals(self) -> None:
        """Take SIGTERM and SIGHUP (UI thread) before a browse mount starts.

        libfuse installs its own handlers for signals left at their default (in
        this process: SIGTERM and SIGHUP; Python has SIGINT). A SIGTERM or a
        terminal hang-up would then only stop the FUSE loop under a running UI,
        leaving loop devices and mounts on a dead folder. Ours ends the app in
        order instead: the mounts are released on the way out."""
        if self._saved_signals or threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()

        def leave(signum: int, frame: object) -> None:
            log.warning("signal %d: leaving, releasing the image mounts", signum)
            loop.call_soon_threadsafe(lambda: self.exit(return_code=128 + signum))

        for signum in (signal.SIGTERM, signal.SIGHUP):
            self._saved_signals[signum] = signal.signal(signum, leave)

    def restore_signals(self) -> None:
        """Give SIGTERM and SIGHUP back (once no browse mount lives)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, handler in self._saved_signals.items():
            signal.signal(signum, handler)
        self._saved_signals.clear()

    def release_image_mount(self, mount: ImageMount) -> None:
        """Take ``mount`` down off the UI thread (filesystems, loop devices, FUSE)."""
        self._release_mount_worker(mount)

    @work(thread=True, group="release-image", exit_on_error=False)
    def _release_mount_worker(self, mount: ImageMount) -> None:
        _close_mount(mount)
        with contextlib.suppress(RuntimeError):  # the app has ended meanwhile
            self.call_from_thread(self._mount_released, mount)

    def _mount_released(self, mount: ImageMount) -> None:
        self.image_mounts.discard(mount)
        if not self.image_mounts:
            self.restore_signals()

    def release_image_mounts(self) -> None:
        """Every mount still live, taken down in a thread of its own (the exit)."""
        mounts, self.image_mounts = list(self.image_mounts), set()
        if not mounts:
            return

        def close_all() -> None:
            for mount in mounts:
                _close_mount(mount)

        closer = threading.Thread(target=close_all, name="liferaft-unmount")
        closer.start()
        closer.join(60)

    # ------------------------------------------------------------ navigation

    def action_go_home(self) -> None:
        while len(self.screen_stack) > 2:
            self.pop_screen()
        refresh = getattr(self.screen, "refresh_disks", None)
        self.release_in_worker(then=refresh if callable(refresh) else None)

    def action_show_log(self) -> None:
        from rescue_app.tui.screens.logview import LogScreen

        if not isinstance(self.screen, LogScreen):
            self.push_screen(LogScreen())

    # ------------------------------------------------------------ errors

    def show_error(
        self,
        error: BaseException,
        *,
        title: str | None = None,
        then: Callable[[], None] | None = None,
    ) -> None:
        """One modal per failure: what happened and what to do. Never a traceback."""
        from rescue_app.tui.screens.error import ErrorModal

        if isinstance(error, LiferaftError):
            log.error("%s", error)
        else:
            log.error("internal error", exc_info=error)
        self.push_screen(
            ErrorModal(error, title=title), callback=(lambda _: then()) if then else None
        )

    def _handle_exception(self, error: Exception) -> None:
        # A bug in UI code (not in a worker: those become error modals). Textual has
        # stopped the message loop of the widget that raised, so the screen cannot be
        # trusted any more: leave cleanly with one line and keep the log on disk.
        log.critical("internal error in the user interface", exc_info=error)
        saved = self.save_log()
        where = f"; the log is in {saved}" if saved else ""
        self._return_code = 1
        self.exit(
            1,
            return_code=1,
            message=f"liferaft: internal error in the user interface: "
            f"{error.__class__.__name__}: {error}{where}",
        )

    def save_log(self) -> str | None:
        path = os.path.join(tempfile.gettempdir(), "liferaft-tui.log")
        try:
            with open(path, "w", encoding="utf-8") as f:
                f.write("\n".join(self.log_handler.lines()) + "\n")
        except OSError:
            return None
        return path

    def on_unmount(self) -> None:
        self.engine.ask_passwords_with(None)
        self.release_image_mounts()  # before the source their chunks come from
        self.restore_signals()
        self.release_source()


def _close_mount(mount: ImageMount) -> None:
    try:
        mount.close()
    except LiferaftError as exc:
        log.warning("unmounting the image on %s: %s", mount.point, exc)
    with contextlib.suppress(OSError):
        os.rmdir(mount.point)  # the temporary folder it was mounted on


def _close(source: RepositorySource | None) -> None:
    if source is not None:
        try:
            source.close()
        except LiferaftError as exc:
            log.warning("closing %s: %s", source.label, exc)


def install_log_handler() -> MemoryLogHandler:
    """Keep every liferaft log record in memory for the log viewer (once per process)."""
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, MemoryLogHandler):
            return handler
    handler = MemoryLogHandler()
    root.addHandler(handler)
    liferaft = logging.getLogger("liferaft")
    if liferaft.getEffectiveLevel() > logging.INFO:
        liferaft.setLevel(logging.INFO)
    return handler


def _quiet_stream_handlers() -> None:
    # Log lines written to the terminal would tear the screen; the viewer shows them.
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler and getattr(handler, "stream", None) in (
            sys.stderr,
            sys.stdout,
        ):
            logging.getLogger().removeHandler(handler)


def run_app(engine: Engine, profile_path: str | None = None) -> int:
    """Entry point of `liferaft tui`."""
    if os.environ.get("TERM") in (None, "", "dumb"):
        os.environ["TERM"] = "linux"
    _quiet_stream_handlers()
    handler = install_log_handler()
    # LIFERAFT_TUI_NO_SCAN=1: do not mount other disks' partitions to look for
    # repositories (tests on a shared host; machines where even a read-only mount is unwanted).
    scan = os.environ.get("LIFERAFT_TUI_NO_SCAN", "") in ("", "0")
    app = LiferaftApp(
        engine, profile=load_profile_info(profile_path), log_handler=handler, scan_media=scan
    )
    try:
        code = app.run()
    except Exception as exc:  # the terminal is restored by now; one line, no traceback
        print(
            f"liferaft: the user interface stopped: {exc.__class__.__name__}: {exc}",
            file=sys.stderr,
        )
        return 1
    finally:
        app.release_image_mounts()
        app.release_source()
    return int(code or 0)
