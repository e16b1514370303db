"""What every liferaft screen shares: worker failures become error modals."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual.screen import Screen
from textual.worker import Worker, WorkerState

if TYPE_CHECKING:
    from rescue_app.tui.app import LiferaftApp


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
