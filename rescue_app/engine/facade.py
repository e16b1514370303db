"""Engine: the one object the CLI, the UI and unattended mode call.

Contract (stable; other parts of liferaft are written against it):

    eng = Engine()
    disks = eng.list_disks()                         # list[BlockDisk]
    repo = eng.open_repository("/mnt/usb/liferaft")  # Repository (path today, URLs later)
    images = eng.list_images(repo)                   # list[ImageSummary], newest last
    manifest = eng.load_manifest(repo, "web1@20261125T101500Z")   # or just "web1" = newest
    plan = eng.plan_restore(repo, "web1", ["/dev/sdb"], grow=False)  # RestorePlan, no writes
    print(plan.render())                             # human text: what is erased, new layout
    result = eng.restore(plan, progress=cb, cancel=token, verify=True)
    result = eng.capture(repo, "web1", ["/dev/sda"], progress=cb, cancel=token)
    report = eng.verify(repo, "web1", progress=cb, cancel=token)
    net = eng.network_status()                       # NetworkStatus: interfaces, online?
    eng.network_dhcp("eth0")                         # Interface, once it has an address
    eng.network_static("eth0", "10.0.0.5/24", gateway="10.0.0.1", dns=["10.0.0.1"])

Every method raises only LiferaftError subclasses for failures a user can meet.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager

from rescue_app.engine import disks as _disks
from rescue_app.engine import mounts as _mounts
from rescue_app.engine import network as _network
from rescue_app.engine import plan as _plan
from rescue_app.engine import power as _power
from rescue_app.engine.capture import capture as _capture_disks
from rescue_app.engine.capture import capture_refusals as _capture_refusals
from rescue_app.engine.disks import BlockDisk
from rescue_app.engine.manifest import ImageSummary, Manifest
from rescue_app.engine.network import Interface, NetworkStatus
from rescue_app.engine.plan import RestorePlan
from rescue_app.engine.repository import Repository
from rescue_app.engine.restore import apply_plan
from rescue_app.engine.results import CaptureResult, RestoreResult, VerifyReport
from rescue_app.engine.stores.retry import Watch
from rescue_app.engine.verify import verify_repository
from rescue_app.progress import CancelToken, ProgressCallback, no_progress


class Engine:
    """Facade over the engine modules."""

    def list_disks(self) -> list[BlockDisk]:
        return _disks.list_disks()

    def find_disk(self, spec: str) -> BlockDisk:
        """``spec`` is a device path, ``serial:XYZ`` or ``wwn:0x...``."""
        return _disks.find_disk(spec)

    def open_repository(self, location: str, *, create: bool = False) -> Repository:
        return Repository.open(location, create=create)

    def list_images(self, repo: Repository) -> list[ImageSummary]:
        return repo.list_images()

    def load_manifest(self, repo: Repository, ref: str) -> Manifest:
        return repo.load_manifest(ref)

    def plan_restore(
        self, repo: Repository, ref: str, targets: Sequence[str], *, grow: bool = False
    ) -> RestorePlan:
        manifest = repo.load_manifest(ref)
        disks = [_disks.find_disk(t) for t in targets]
        plan = _plan.make_restore_plan(repo, manifest, disks, grow=grow)
        # Before anything is confirmed or erased (and in a dry run): every
        # chunk the image needs must be in the repository.
        repo.check_chunks_present(manifest)
        return plan

    def restore(
        self,
        plan: RestorePlan,
        *,
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
        verify: bool = False,
    ) -> RestoreResult:
        # (apply_plan re-plans from the disks as they are now and refuses a
        # plan that no longer matches what was confirmed)
        with _watching(plan.repo, progress, cancel):
            return apply_plan(plan, progress=progress, cancel=cancel, verify=verify)

    def capture(
        self,
        repo: Repository,
        name: str,
        devices: Sequence[str],
        *,
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
    ) -> CaptureResult:
        disks = [_disks.find_disk(d) for d in devices]
        with _watching(repo, progress, cancel):
            return _capture_disks(repo, name, disks, progress=progress, cancel=cancel)

    def capture_refusals(self, disk: BlockDisk, repository: str | None = None) -> tuple[str, ...]:
        """Why ``disk`` may not be captured now (empty: it may), as text for people.
        ``repository``: a local folder the backup would go to."""
        return tuple(str(r) for r in _capture_refusals(disk, repository))

    def verify(
        self,
        repo: Repository,
        ref: str | None = None,
        *,
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
    ) -> VerifyReport:
        with _watching(repo, progress, cancel):
            return verify_repository(repo, ref, progress=progress, cancel=cancel)

    # -- the rescue system itself

    def power_off(self, *, unattended: bool = False) -> bool:
        """Switch the machine off. ``unattended``: nobody asked at the keyboard, so
        only on the rescue system itself; False (nothing done) elsewhere."""
        return _power.switch("poweroff", asked_by_person=not unattended)

    def reboot(self) -> None:
        """Restart the machine, asked for by the person at it."""
        _power.switch("reboot", asked_by_person=True)

    # -- local filesystems (the UI's media scan; every mount is in engine/mounts.py)

    def mounted(
        self, device: str, fstype: str | None, *, writable: bool = False
    ) -> AbstractContextManager[str]:
        """Mount ``device`` on a temporary folder for a ``with`` block (read-only
        unless ``writable``); always unmounted, lazily if busy."""
        return _mounts.mounted(device, fstype, writable=writable)

    # -- the running system's network (the UI's network screen, `liferaft net`)

    def network_status(self) -> NetworkStatus:
        return _network.status()

    def network_dhcp(self, iface: str, *, timeout: float = _network.DHCP_TIMEOUT) -> Interface:
        return _network.dhcp(iface, timeout=timeout)

    def network_static(
        self,
        iface: str,
        address: str,
        *,
        gateway: str | None = None,
        dns: Sequence[str] = (),
        timeout: float = _network.STATIC_TIMEOUT,
    ) -> Interface:
        config = _network.parse_static(iface, address, gateway, dns)
        return _network.static(config, timeout=timeout)


@contextmanager
def _watching(
    repo: Repository, progress: ProgressCallback, cancel: CancelToken | None
) -> Iterator[None]:
    """For the length of one operation, the repository's store reports its
    retries on the operation's progress and stops them when it is cancelled."""
    repo.store.watch = Watch(repo.location, progress, cancel)
    try:
        yield
    finally:
        del repo.store.watch  # back to the store's quiet default
