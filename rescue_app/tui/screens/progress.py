"""Progress and summary of a long job (restore, backup, verify).

The job runs in a thread worker; the engine's progress callback posts
throttled ``ProgressUpdate`` messages (the only thread-safe way in), and the
screen draws them. Cancelling asks first, then sets the engine's CancelToken;
the summary says in plain words what state the disks and repository are in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Footer, Header, ProgressBar, Static

from rescue_app.engine import (
    CaptureResult,
    Engine,
    PartitionRestorePlan,
    Repository,
    RestorePlan,
    RestoreResult,
    VerifyReport,
    human_duration,
    human_size,
)
from rescue_app.errors import CancelledError, LiferaftError
from rescue_app.progress import CancelToken, Progress, ProgressCallback
from rescue_app.tui import keymap
from rescue_app.tui.screens.base import LiferaftScreen
from rescue_app.tui.screens.error import explain
from rescue_app.tui.tracking import ProgressTracker

THROTTLE = 0.1  # seconds between redraws; the engine may report every chunk

log = logging.getLogger("liferaft.tui")


@dataclass(frozen=True)
class Summary:
    ok: bool
    lines: tuple[str, ...]
    next_steps: str


@dataclass
class Job:
    kind: str  # "restore", "backup", "verify"
    title: str
    run: Callable[[ProgressCallback, CancelToken], Any]
    summarize: Callable[[Any], Summary]
    cancel_question: str
    cancelled_state: str  # what is left after a cancel
    failed_state: str  # what is left after a failure
    extra: dict[str, Any] = field(default_factory=dict)
    # Unmount the repository's medium at the end (False: a screen below still reads it)
    releases_source: bool = True


def _verdict(report: VerifyReport, lines: tuple[str, ...], if_ok: str, if_not: str) -> Summary:
    """A job that ends with a verification: its outcome decides what to do next."""
    return Summary(report.ok, lines, if_ok if report.ok else if_not)


def restore_job(engine: Engine, plan: RestorePlan | PartitionRestorePlan) -> ProgressScreen:
    targets = ", ".join(d.target.path for d in plan.disks)

    def run(progress: ProgressCallback, cancel: CancelToken) -> RestoreResult:
        # (the engine checks the disks are still those of the confirmed plan)
        if isinstance(plan, PartitionRestorePlan):  # a Clonezilla saveparts image
            return engine.restore_partitions(plan, progress=progress, cancel=cancel, verify=True)
        # An unlocked LUKS volume's passphrase: the engine's credentials,
        # then the app's password dialog (asked only when the image has one).
        luks_key = engine.luks_keys() if plan.manifest.luks_volumes else None
        return engine.restore(
            plan, progress=progress, cancel=cancel, verify=True, luks_key=luks_key
        )

    def summarize(r: RestoreResult) -> Summary:
        verified = "read back and matches the image" if r.verified else "not checked"
        lines = (
            f"Restored {r.ref} to {', '.join(r.targets)}.",
            f"Time: {human_duration(r.seconds)}   {r.figures()}",
            f"Verification: {verified}",
            *(f"Note: {n}" for n in r.notes),
        )
        return Summary(
            True,
            lines,
            "Remove the rescue stick, then reboot (p on the home "
            "screen) to start the restored system.",
        )

    return ProgressScreen(
        Job(
            kind="restore",
            title=f"Restoring {plan.manifest.ref} to {targets}",
            run=run,
            summarize=summarize,
            cancel_question=f"Stop the restore? {targets} will be left incomplete and will "
            "not boot until a restore finishes.",
            cancelled_state=f"The restore was stopped. {targets} is incomplete: its old contents "
            "are gone and it will not boot. Restore again to finish.",
            failed_state=f"The restore did not finish. {targets} is probably incomplete; fix "
            "the cause and restore again.",
        )
    )


def backup_job(
    engine: Engine,
    open_repo: Callable[[], Repository],
    name: str,
    devices: list[str],
    unlock: bool = False,
) -> ProgressScreen:
    """``unlock``: open the LUKS volumes (capture --unlock); their passphrase
    comes from the engine's credentials chain, the app's password dialog."""

    def run(
        progress: ProgressCallback, cancel: CancelToken
    ) -> tuple[CaptureResult, VerifyReport, str]:
        repo = open_repo()
        luks_key = engine.luks_keys() if unlock else None
        result = engine.capture(
            repo, name, devices, progress=progress, cancel=cancel, luks_key=luks_key
        )
        report = engine.verify(repo, result.ref, progress=progress, cancel=cancel)
        return result, report, repo.location

    def summarize(value: tuple[CaptureResult, VerifyReport, str]) -> Summary:
        r, report, location = value
        check = (
            "OK, every chunk read back"
            if report.ok
            else (f"{len(report.problems)} problem(s): " + "; ".join(report.problems[:3]))
        )
        lines = (
            f"Saved image {r.ref} in {location}.",
            f"Time: {human_duration(r.seconds)}   Data: {human_size(r.data_bytes)}   "
            f"newly stored: {human_size(r.stored_bytes)}",
            f"Chunks: {r.chunks_new} new of {r.chunks_total}",
            f"Verification: {check}",
            *(f"Note: {n}" for n in r.notes),
        )
        return _verdict(
            report,
            lines,
            "Keep the repository disk safe; you can remove it now.",
            "The image is damaged: back up again, onto another disk if you can.",
        )

    return ProgressScreen(
        Job(
            kind="backup",
            title=f"Backing up {', '.join(devices)} as {name}",
            run=run,
            summarize=summarize,
            cancel_question="Stop the backup? No image will be recorded.",
            cancelled_state="The backup was stopped; no image was recorded. Data already "
            "copied is reused by the next backup.",
            failed_state="The backup did not finish; no image was recorded.",
        )
    )


def verify_job(engine: Engine, repo: Repository, ref: str) -> ProgressScreen:
    def run(progress: ProgressCallback, cancel: CancelToken) -> VerifyReport:
        return engine.verify(repo, ref, progress=progress, cancel=cancel)

    def summarize(report: VerifyReport) -> Summary:
        check = "OK" if report.ok else f"{len(report.problems)} problem(s)"
        lines = (
            f"Verified {', '.join(report.refs)}: {check}",
            f"Chunks checked: {report.chunks_checked}   Data: {human_size(report.bytes_checked)}",
            *(f"Problem: {p}" for p in report.problems[:5]),
        )
        return _verdict(
            report,
            lines,
            "This image can be restored.",
            "Do not rely on this image: restore an older one, or back up again.",
        )

    return ProgressScreen(
        Job(
            kind="verify",
            title=f"Verifying {ref}",
            run=run,
            summarize=summarize,
            cancel_question="Stop verifying? Nothing is changed either way.",
            cancelled_state="Verification was stopped; nothing was changed.",
            failed_state="Verification could not finish; nothing was changed.",
        )
    )


class ProgressUpdate(Message):
    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self.progress = progress

    def can_replace(self, message: Message) -> bool:
        # Only the newest snapshot matters when the UI falls behind.
        return isinstance(message, ProgressUpdate)


class JobFinished(Message):
    def __init__(self, result: Any = None, error: BaseException | None = None) -> None:
        super().__init__()
        self.result = result
        self.error = error


class ProgressScreen(LiferaftScreen):
    BINDINGS = keymap.PROGRESS
    clock: Callable[[], float] = staticmethod(time.monotonic)

    def __init__(self, job: Job) -> None:
        super().__init__()
        self.job = job
        self.token = CancelToken()
        self.tracker = ProgressTracker(self.clock())
        self.finished = False
        self.summary: Summary | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="progress-box"):
            yield Static(self.job.title, classes="section", markup=False)
            yield Static("Starting...", id="progress-phase", markup=False)
            yield Static("Overall", classes="bar-label")
            yield ProgressBar(id="bar-overall", show_eta=False)
            yield Static("Current part", id="item-label", classes="bar-label", markup=False)
            yield ProgressBar(id="bar-item", show_eta=False)
            yield Static("", id="progress-stats", markup=False)
            yield Static("", id="progress-notice", markup=False)
        yield Static("", id="summary", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        log.warning("%s started", self.job.title)
        self.sub_title = self.job.kind.capitalize()
        self.query_one("#summary").display = False
        self.set_interval(1.0, self.tick)
        self.run_job()

    # ------------------------------------------------------------ the worker

    @work(thread=True, exclusive=True, exit_on_error=False, group="job")
    def run_job(self) -> None:
        last_time, last_phase = [0.0], [""]

        def report(p: Progress) -> None:
            if p.phase == "notice":  # a passing condition: beside the bars, not in them
                self.app.call_from_thread(self.show_notice, p.notice)
                return
            now = time.monotonic()
            final = p.total > 0 and p.done >= p.total
            if now - last_time[0] >= THROTTLE or p.phase != last_phase[0] or final or p.message:
                last_time[0], last_phase[0] = now, p.phase
                self.post_message(ProgressUpdate(p))

        try:
            result = self.job.run(report, self.token)
        except BaseException as exc:  # every failure becomes a summary, never a traceback
            self.post_message(JobFinished(error=exc))
            return
        self.post_message(JobFinished(result=result))

    def show_notice(self, text: str) -> None:
        """ "server unreachable, retrying (12 s of 60)"; "" once it answers again."""
        self.query_one("#progress-notice", Static).update(f"! {text}" if text else "")

    def on_progress_update(self, message: ProgressUpdate) -> None:
        self.draw(self.tracker.update(message.progress, self.clock()))

    def tick(self) -> None:
        if not self.finished:
            self.draw(self.tracker.view(self.clock()))

    def draw(self, view: Any) -> None:
        phase = f"{view.phase}: {view.item}" if view.item else view.phase
        if view.message:
            phase += f" - {view.message}"
        self.query_one("#progress-phase", Static).update(phase)
        overall = self.query_one("#bar-overall", ProgressBar)
        if view.overall is None:
            overall.update(total=None)
        else:
            overall.update(total=100, progress=view.overall * 100)
        item = self.query_one("#bar-item", ProgressBar)
        if view.item_fraction is None:
            item.update(total=None)
        else:
            item.update(total=100, progress=view.item_fraction * 100)
        self.query_one("#item-label", Static).update(f"Current part {view.item_text}".rstrip())
        self.query_one("#progress-stats", Static).update(
            f"{view.overall_text}   Rate: {view.rate_text}   Elapsed: {view.elapsed_text}   "
            f"ETA: {view.eta_text}".strip()
        )

    def on_job_finished(self, message: JobFinished) -> None:
        self.finished = True
        if message.error is None:
            try:
                self.summary = self.job.summarize(message.result)
            except Exception as exc:  # a bug in a summary must not lose the result
                self.summary = Summary(True, ("The job finished.",), "")
                self.lapp.show_error(exc)
        elif isinstance(message.error, CancelledError):
            self.summary = Summary(
                False,
                ("Cancelled.", self.job.cancelled_state),
                "choose another action on the home screen.",
            )
        else:
            what, todo = explain(message.error)
            self.summary = Summary(False, (f"Failed: {what}", self.job.failed_state), todo)
            self.lapp.show_error(message.error, title=f"{self.job.kind.capitalize()} failed")
        outcome = "done" if self.summary.ok else "NOT done"
        log.warning("%s: %s. %s", self.job.title, outcome, " ".join(self.summary.lines))
        # Unmount a repository stick (off the UI thread) before the summary's
        # advice (remove it) is shown.
        summary = self.summary
        if self.job.releases_source and (self.job.kind != "verify" or message.error is None):
            self.lapp.release_in_worker(then=lambda: self.show_summary(summary))
        else:
            self.show_summary(summary)

    def show_summary(self, summary: Summary) -> None:
        self.query_one("#progress-box").display = False
        box = self.query_one("#summary", Static)
        head = "Done." if summary.ok else "Not done."
        text = "\n".join(
            (
                head,
                "",
                *summary.lines,
                "",
                f"Next: {summary.next_steps}",
                "",
                "Press Enter for the home screen, l for the log.",
            )
        )
        box.update(text)
        box.display = True
        self.sub_title = f"{self.job.kind.capitalize()}: summary"
        self.refresh_bindings()

    # ------------------------------------------------------------ keys

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_job":
            return not self.finished
        if action == "home":
            return self.finished
        return True

    def action_cancel_job(self) -> None:
        if self.finished or self.token.cancelled:
            return
        from rescue_app.tui.screens.question import QuestionModal

        def answered(yes: bool | None) -> None:
            if yes and not self.finished:
                self.token.cancel()
                self.query_one("#progress-phase", Static).update(
                    "Cancelling: waiting for the current step to stop..."
                )

        self.app.push_screen(
            QuestionModal("Cancel?", self.job.cancel_question, yes="Stop it", no="Keep going"),
            callback=answered,
        )

    def action_home(self) -> None:
        if self.finished:
            self.lapp.action_go_home()


__all__ = [
    "Job",
    "LiferaftError",
    "ProgressScreen",
    "Summary",
    "backup_job",
    "restore_job",
    "verify_job",
]
