"""What every liferaft screen shares: worker failures become error modals."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual import work
from textual.screen import Screen
from textual.worker import Worker, WorkerState

if TYPE_CHECKING:
    from rescue_app.engine import Repository
    from rescue_app.tui.app import LiferaftApp
    from rescue_app.tui.sources import RepositorySource


class LiferaftScreen(Screen[Any]):
    @property
    def lapp(self) -> LiferaftApp:
        from rescue_app.tui.app import LiferaftApp

        assert isinstance(self.app, LiferaftApp)
        return self.app

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.worker_failed(event.worker, event.worker.error)

    def worker_failed(self, worker: Worker[Any], error: BaseException) -> None:
        self.lapp.show_error(error)


class ImageScreen(LiferaftScreen):
    """A screen about one image of a repository: the disks to restore it to,
    or its files."""

    def __init__(self, repo: Repository, ref: str) -> None:
        super().__init__()
        self.repo = repo
        self.ref = ref


class RepositoryOpeningScreen(LiferaftScreen):
    """A screen that opens a chosen source in a worker, then lists its images.

    Subclasses set ``purpose`` ("restore" or "verify") and ``busy``, and say
    where "Opening ..." shows by overriding :meth:`show_opening`.
    """

    purpose: str
    busy: bool

    def show_opening(self, text: str) -> None:
        raise NotImplementedError

    @work(thread=True, exclusive=True, exit_on_error=False, group="open")
    def open_source(self, source: RepositorySource) -> None:
        try:
            repo = source.open(self.lapp.engine, writable=False)
        except BaseException as exc:
            self.app.call_from_thread(self.opened, source, None, exc)
            return
        self.app.call_from_thread(self.opened, source, repo, None)

    def opened(
        self, source: RepositorySource, repo: Repository | None, error: BaseException | None
    ) -> None:
        self.busy = False
        self.show_opening("")
        if error is not None or repo is None:
            self.lapp.show_error(error or RuntimeError("no repository"))
            return
        from rescue_app.tui.screens.images import ImagesScreen

        self.lapp.use_source(source)
        self.app.push_screen(ImagesScreen(repo, purpose=self.purpose))
