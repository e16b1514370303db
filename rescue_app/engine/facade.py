"""Engine: the one object the CLI, the UI and unattended mode call.

Contract (stable; other parts of liferaft are written against it):

    eng = Engine(credentials=CredentialChain.standard(prompt=TerminalPrompt()))
    disks = eng.list_disks()                         # list[BlockDisk]
    repo = eng.open_repository("/mnt/usb/liferaft")  # Repository (path today, URLs later)
    images = eng.list_images(repo)                   # list[ImageSummary], newest last
    manifest = eng.load_manifest(repo, "web1@20261125T101500Z")   # or just "web1" = newest
    plan = eng.plan_restore(repo, "web1", ["/dev/sdb"], RestoreChoices(grow=True))  # no writes
    print(plan.render())                             # human text: what is erased, new layout
    result = eng.restore(plan, progress=cb, cancel=token, verify=True)
    result = eng.capture(repo, "web1", ["/dev/sda"], progress=cb, cancel=token)
    report = eng.verify(repo, "web1", progress=cb, cancel=token)
    net = eng.network_status()                       # NetworkStatus: interfaces, online?
    eng.network_dhcp("eth0")                         # Interface, once it has an address
    eng.network_static("eth0", "10.0.0.5/24", gateway="10.0.0.1", dns=["10.0.0.1"])
    with eng.mount_image(repo, "web1", "/mnt/image") as m:   # read-only browse mount
        m.partitions; m.list_dir(m.partitions[0], "etc")
    eng.unmount_image("/mnt/image")                  # from another process too
    eng.extract(repo, "web1", ["/etc/fstab"], "/root/out", partition="2")

Every method raises only LiferaftError subclasses for failures a user can meet.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from rescue_app import run as _run
from rescue_app.engine import diskscan as _diskscan
from rescue_app.engine import mounts as _mounts
from rescue_app.engine import network as _network
from rescue_app.engine import plan as _plan
from rescue_app.engine.diskmodel import BlockDisk
from rescue_app.engine.freshness import image_time
from rescue_app.engine.keychain import LUKS_PREFIX as _LUKS_PREFIX
from rescue_app.engine.keychain import CallbackPrompt, CredentialChain, PasswordPrompt
from rescue_app.engine.keychain import CredentialSource as _CredentialSource
from rescue_app.engine.keychain import SecretKind as _SecretKind
from rescue_app.engine.keychain import SecretRequest as _SecretRequest
from rescue_app.engine.later import Later, deferred
from rescue_app.engine.manifest import ImageSummary, Manifest
from rescue_app.engine.network import Interface, NetworkStatus
from rescue_app.engine.plan import RestoreChoices, RestorePlan
from rescue_app.engine.repository import REPO_FILE, Repository
from rescue_app.engine.results import CaptureResult
from rescue_app.engine.stores import is_remote, open_store
from rescue_app.engine.stores import reject_password_in_url as _reject_password_in_url
from rescue_app.engine.stores.retry import Watch
from rescue_app.errors import ImageNotFoundError, RepositoryError, UsageError
from rescue_app.progress import CancelToken, ProgressCallback, no_progress

# What the rescue app's first screen does not need is imported when first
# used: the app starts without capture, restore, browse, the Clonezilla reader
# or the HTTP server in memory (boot time, issue 17;
# tests/tui/test_import_hygiene.py checks).
if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

    from rescue_app.engine import browse as _browse
    from rescue_app.engine import capture as _capture
    from rescue_app.engine import clonezilla as _clonezilla
    from rescue_app.engine import imagefs as _imagefs
    from rescue_app.engine import keys as _keys
    from rescue_app.engine import luks as _luks
    from rescue_app.engine import ntfsshrink as _ntfsshrink
    from rescue_app.engine import online as _online
    from rescue_app.engine import partrestore as _partrestore
    from rescue_app.engine import power as _power
    from rescue_app.engine import probe as _probe
    from rescue_app.engine import prune as _prune
    from rescue_app.engine import restore as _restore
    from rescue_app.engine import retention as _retention
    from rescue_app.engine import schedule as _schedule
    from rescue_app.engine import signing as _signing
    from rescue_app.engine import verify as _verify
    from rescue_app.engine.browse import BrowsePartition, ExtractResult, ImageMount
    from rescue_app.engine.online import BackupRequest
    from rescue_app.engine.prune import PruneResult
    from rescue_app.engine.retention import ForgetPlan, KeepPolicy
    from rescue_app.engine.schedule import Schedule, ScheduledBackup
    from rescue_app.engine.signing import Signer, TrustedKeys
    from rescue_app.engine.stores import httpserve as _httpserve
    from rescue_app.engine.stores.httpserve import ServeOptions
else:
    _browse = Later("rescue_app.engine.browse")
    _clonezilla = Later("rescue_app.engine.clonezilla")
    _imagefs = Later("rescue_app.engine.imagefs")
    _keys = Later("rescue_app.engine.keys")
    _luks = Later("rescue_app.engine.luks")
    _online = Later("rescue_app.engine.online")
    _partrestore = Later("rescue_app.engine.partrestore")
    _power = Later("rescue_app.engine.power")
    _probe = Later("rescue_app.engine.probe")
    _prune = Later("rescue_app.engine.prune")
    _retention = Later("rescue_app.engine.retention")
    _schedule = Later("rescue_app.engine.schedule")
    _signing = Later("rescue_app.engine.signing")
    _capture = Later("rescue_app.engine.capture")
    _ntfsshrink = Later("rescue_app.engine.ntfsshrink")
    _restore = Later("rescue_app.engine.restore")
    _verify = Later("rescue_app.engine.verify")
    _httpserve = Later("rescue_app.engine.stores.httpserve")

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _watched(operation: Callable[_P, _R], repo_of: Callable[[Any], Repository]) -> Callable[_P, _R]:
    """``operation`` as an Engine method: while it runs, the store of its
    repository (``repo_of`` its first argument) reports retries on its
    ``progress`` and stops them on its ``cancel`` (_watching)."""

    @functools.wraps(operation)
    def watched(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        progress = cast(ProgressCallback, kwargs.get("progress", no_progress))
        cancel = cast("CancelToken | None", kwargs.get("cancel"))
        with _watching(repo_of(args[0]), progress, cancel):
            return operation(*args, **kwargs)

    return watched


def _load_manifest(
    repo: Repository, ref: str, progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
) -> Manifest:  # fmt: skip
    return repo.load_manifest(ref, progress, cancel)


class Engine:
    """Facade over the engine modules.

    ``credentials``: where the stores this Engine opens get their secrets
    (rescue_app/engine/keychain.py). The CLI, the UI and unattended mode each
    build theirs; without one, the environment and the credentials file, and
    nobody is asked. Two Engines never see each other's secrets."""

    def __init__(
        self, *, credentials: CredentialChain | None = None, trusted: TrustedKeys | None = None
    ) -> None:
        """``trusted``: every image this Engine reads must be signed by one of
        these keys (engine/signing.py); None: signatures are not checked."""
        self.credentials = credentials if credentials is not None else CredentialChain.standard()
        self.trusted = trusted
        self._earlier_prompt: _CredentialSource | None = None  # while a UI asks

    def list_disks(self) -> list[BlockDisk]:
        return _diskscan.list_disks()

    def find_disk(self, spec: str) -> BlockDisk:
        """``spec`` is a device path, ``serial:XYZ`` or ``wwn:0x...``."""
        return _diskscan.find_disk(spec)

    def open_repository(
        self, location: str, *, create: bool = False, unlock: bool = True
    ) -> Repository:
        """A liferaft repository, or (to read, list and restore) a folder of
        Clonezilla images or one Clonezilla image folder. An encrypted one is
        unlocked with the passphrase the credentials give (``unlock=False``:
        left locked, for key management)."""
        # A network location is opened once, so a password is asked once.
        store = open_store(location, self.credentials) if is_remote(location) else None
        try:
            source = _clonezilla.open_source(location, self.credentials, store)
        except BaseException:
            if store is not None:
                store.close()
            raise
        if source is not None:
            if create:  # a backup or an import would put a repository among them
                raise source.read_only_error()
            if self.trusted is not None:
                raise RepositoryError(
                    f"{location} holds Clonezilla images, which are not signed, and only "
                    f"images signed by a key of {self.trusted.origin} are accepted",
                    hint="import them into a repository with 'liferaft import' on a trusted "
                    "machine and capture signed images",
                )
            return source
        repo = Repository.open(
            location, create=create, credentials=self.credentials, unlock=unlock, store=store
        )
        repo.trusted = self.trusted
        return repo

    @staticmethod
    def load_signing_key(path: str) -> Signer:
        """The Ed25519 private key file ``capture(signer=...)`` signs with;
        UsageError naming the file when it is not one."""
        return _signing.load_signer(path)

    @staticmethod
    def load_trusted_keys(paths: Sequence[str]) -> TrustedKeys:
        """The Ed25519 public key files an Engine's ``trusted`` is made of."""
        return _signing.load_trusted(list(paths))

    # -- encrypted repositories (engine/keys.py)

    def init_repository(self, location: str, *, passphrase: str | None = None) -> Repository:
        """Create an empty repository now; encrypted when ``passphrase`` is given."""
        repo = self.open_repository(location, create=True)
        if not repo.create_pending:
            raise RepositoryError(
                f"{location} is already a liferaft repository",
                hint="give a new or empty folder",
            )
        if passphrase is None:
            repo.create_now()
        else:
            _keys.create(repo, _keys.check_new_passphrase(passphrase))
        return repo

    def given_passphrase(self, location: str) -> str | None:
        """The passphrase for ``location`` the credentials give without asking anyone."""
        request = _SecretRequest(_SecretKind.PASSPHRASE, url=location)
        answer = self.credentials.lookup(request, ask=False)
        return answer.passphrase if answer is not None else None

    @staticmethod
    def key_slots(repo: Repository) -> list[_keys.SlotInfo]:
        return _keys.list_slots(repo)

    @staticmethod
    def add_key(repo: Repository, passphrase: str) -> str:
        return _keys.add_slot(repo, passphrase)

    @staticmethod
    def remove_key(repo: Repository, slot: str) -> None:
        _keys.remove_slot(repo, slot)

    @staticmethod
    def paper_key(repo: Repository) -> str:
        return _keys.paper_key(repo)

    @staticmethod
    def import_paper_key(repo: Repository, text: str, passphrase: str) -> str:
        return _keys.import_paper_key(repo, text, passphrase)

    @staticmethod
    def holds_clonezilla_images(path: str) -> bool:
        """``path`` is a local folder of Clonezilla images (or one image folder)
        that ``open_repository`` opens read-only (the UI's media scan)."""
        return _clonezilla.looks_like_clonezilla(path)

    def import_clonezilla(
        self,
        repo: Repository,
        image_dir: str,
        name: str | None,
        *,
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
    ) -> _clonezilla.ImportResult:
        """Convert the Clonezilla image folder ``image_dir`` (a path or a store
        URL) into an image of ``repo`` (clonezilla.import_image)."""
        folder = _clonezilla.image_folder_at(image_dir, self.credentials)
        try:
            with _watching(repo, progress, cancel):
                return _clonezilla.import_image(
                    repo, folder, name, progress=progress, cancel=cancel
                )
        finally:
            folder.store.close()

    # -- secrets (the UI's password field and dialog)

    def remember_password(self, who: str, password: str) -> None:
        """A password of ``who`` (``user@host``) typed in the UI, for this Engine only."""
        self.credentials.remember(who, password)

    def ask_passwords_with(self, ask: PasswordPrompt | None) -> None:
        """Ask ``ask(user@host)`` when nothing else gives a password (the UI's
        dialog, called from a worker thread); None: the prompt there was before."""
        if ask is None:
            self.credentials.use_prompt(self._earlier_prompt)
            return
        earlier = self.credentials.use_prompt(CallbackPrompt(ask))
        if not isinstance(earlier, CallbackPrompt):
            self._earlier_prompt = earlier

    def list_images(self, repo: Repository) -> list[ImageSummary]:
        return repo.list_images()

    # The image's manifest. An image that has to be read whole before it can
    # be planned (a Clonezilla image: every partclone checksum, every volume)
    # is read here, reporting ``progress``; plan_restore then uses that reading.
    load_manifest = staticmethod(_watched(_load_manifest, lambda repo: repo))

    def plan_restore(
        self,
        repo: Repository,
        ref: str,
        targets: Sequence[str],
        choices: RestoreChoices | None = None,
    ) -> RestorePlan:
        """Image ``ref`` onto the disks ``targets`` (``/dev/X``, ``serial:...``)
        as the user chose (``RestoreChoices``: grow, the LV that takes the new
        space, partitions that may shrink, seeding, the check before writing;
        None: the defaults)."""
        manifest = repo.load_manifest(ref)
        if manifest.partitions_only:
            raise UsageError(
                f"{manifest.ref} is a Clonezilla saveparts image: it holds partitions, no "
                "disk, and is restored onto existing partitions (its disk's other "
                "partitions were not saved)",
                hint="liferaft restore --repo ... --image ... --to PARTITION (e.g. /dev/sdb2)",
            )
        disks = [_diskscan.find_disk(t) for t in targets]
        plan = _plan.make_restore_plan(repo, manifest, disks, choices or RestoreChoices())
        # Before anything is confirmed or erased (and in a dry run): every
        # chunk the image needs must be in the repository, and no PV the
        # image recreates may be on another disk.
        repo.check_chunks_present(manifest)
        _restore.check_volume_groups_absent(plan)
        _restore.check_btrfs_uuids_free(plan)
        _ntfsshrink.check_scratch_space(plan)
        return plan

    def holds_partitions_only(self, repo: Repository, ref: str) -> bool:
        """The image holds partitions only (a Clonezilla saveparts image, from
        its folder or imported): it is restored onto partitions."""
        return bool(self.load_manifest(repo, ref).partitions_only)

    def saved_partitions(self, repo: Repository, ref: str) -> list[_partrestore.SavedPartition]:
        """A saveparts image's partitions, in order (each is restored onto a
        partition the user names); empty for a whole-disk image."""
        return _partrestore.saved_partitions(self.load_manifest(repo, ref)) or []

    @staticmethod
    def plan_partition_restore(
        repo: Repository, ref: str, targets: Sequence[str], *, grow: bool = False
    ) -> _partrestore.PartitionRestorePlan:
        """A saveparts image onto existing partitions (``targets``: one per
        saved partition in order, or ``SAVED=PARTITION``; ``grow``: each
        filesystem fills its partition); no writes."""
        saved = _partrestore.saved_partitions(repo.load_manifest(ref))
        if saved is None:
            raise UsageError(
                f"{ref} is a whole-disk image: it is restored onto disks",
                hint="name target disks with --to (e.g. /dev/sdb)",
            )
        manifest = repo.load_manifest(ref)
        plan = _partrestore.plan_partition_restore(repo, manifest, saved, targets, grow=grow)
        repo.check_chunks_present(manifest)
        return plan

    restore_partitions = staticmethod(
        _watched(deferred(lambda: _partrestore.apply_partition_plan), lambda plan: plan.repo)
    )

    # ``luks_key``: for an image with unlocked LUKS volumes (``luks_keys``).
    # (apply_plan re-plans from the disks as they are now and refuses a plan
    # that no longer matches what was confirmed.)
    restore = staticmethod(_watched(deferred(lambda: _restore.apply_plan), lambda plan: plan.repo))

    def luks_keys(self, key_file: str | None = None) -> _luks.KeySource:
        """Where LUKS volumes' keys come from: ``key_file``'s bytes, else this
        Engine's credentials (``luks:<UUID>``: LIFERAFT_LUKS_PASSPHRASE, the
        credentials file, the prompt), asked only when a volume needs one."""
        if key_file is not None:
            try:
                with open(key_file, "rb") as f:
                    data = f.read()
            except OSError as exc:
                raise UsageError(
                    f"cannot read the key file {key_file}: {exc.strerror}",
                    hint="give the LUKS volume's key file",
                ) from None
            return lambda _shown, _uuid: data

        def ask(shown: str, uuid: str) -> bytes:
            request = _SecretRequest(_SecretKind.LUKS, url=_LUKS_PREFIX + uuid)
            answer = self.credentials.lookup(request)
            if answer is None or not answer.passphrase:
                raise UsageError(
                    f"no passphrase for the LUKS volume {shown} was given; nothing was written",
                    hint=self.credentials.hints(request),
                )
            return answer.passphrase.encode()

        return ask

    def capture(
        self,
        repo: Repository,
        name: str,
        devices: Sequence[str],
        *,
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
        signer: Signer | None = None,
        luks_key: _luks.KeySource | None = None,
    ) -> CaptureResult:
        """``signer``: sign the image's manifest with this key (unencrypted repositories).
        ``luks_key``: unlock the LUKS volumes (``luks_keys``; encrypted repositories)."""
        disks = [_diskscan.find_disk(d) for d in devices]
        repo.signer = signer
        with _watching(repo, progress, cancel):
            return _capture.capture(
                repo, name, disks, progress=progress, cancel=cancel, luks_key=luks_key
            )

    def backup(
        self,
        repo: Repository,
        request: BackupRequest,
        *,
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
        signer: Signer | None = None,
    ) -> tuple[CaptureResult, list[str]]:
        """The online backup (``liferaft backup``), and one line per volume
        saying how it was captured."""
        repo.signer = signer
        with _watching(repo, progress, cancel):
            result = _online.backup(repo, request, progress=progress, cancel=cancel)
        return result, _online.methods_used(repo.load_manifest(result.ref))

    def capture_refusals(self, disk: BlockDisk, repository: str | None = None) -> tuple[str, ...]:
        """Why ``disk`` may not be captured now (empty: it may), as text for people.
        ``repository``: a local folder the backup would go to."""
        return tuple(str(r) for r in _capture.capture_refusals(disk, repository))

    verify = staticmethod(_watched(deferred(lambda: _verify.verify_repository), lambda repo: repo))

    # -- retention (engine/retention.py, engine/prune.py)

    def forget(
        self,
        repo: Repository,
        policy: KeepPolicy,
        *,
        name: str | None = None,
        dry_run: bool = False,
    ) -> ForgetPlan:
        """Remove the images ``policy`` does not keep (of ``name``, else of
        every name); with ``dry_run`` only decide. Chunks stay until prune."""
        _refuse_clonezilla(repo, "forget")
        images = [
            _retention.ImageTime(i.name, i.id, image_time(i.created))
            for i in repo.list_images()
            if name is None or i.name == name
        ]
        if name is not None and not images:
            raise ImageNotFoundError(
                f"no image named {name!r} in repository {repo.location}",
                hint="run 'liferaft images --repo ...' to list the images",
            )
        plan = _retention.select(images, policy)
        if not dry_run and plan.removed:
            repo.store.check_can_delete()
            repo.remove_images((i.name, i.id) for i in plan.removed)
        return plan

    def prune(
        self,
        repo: Repository,
        *,
        grace: timedelta | None = None,
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
    ) -> PruneResult:
        """One prune run: delete the candidates an earlier run marked (after
        ``grace``, default 24 h), mark the chunks no image needs now (docs/FORMAT.md)."""
        _refuse_clonezilla(repo, "prune")
        with _watching(repo, progress, cancel):
            return _prune.prune(
                repo,
                grace=_prune.DEFAULT_GRACE if grace is None else grace,
                progress=progress,
                cancel=cancel,
            )

    @staticmethod
    def parse_duration(text: str) -> timedelta:
        """``24h``, ``30m``, ``7d``, ``90s`` or seconds; UsageError otherwise."""
        return _prune.parse_duration(text)

    # -- scheduled backups (engine/schedule.py); root: "/" or a system being prepared

    def schedule_backup(
        self,
        name: str,
        repo: str,
        every: str,
        keep: KeepPolicy | None,
        *,
        root: str = "/",
        thin_delta: bool = False,
    ) -> tuple[Schedule, str, str | None]:
        """Write and enable the timer of a backup of ``name`` into ``repo``:
        the schedule, what was done in one sentence, and a note when the
        credentials file has nothing for the repository."""
        schedule = _schedule.make_schedule(name, repo, every, keep, thin_delta)
        host = _schedule.ScheduleHost(root)
        return schedule, host.install(schedule), host.credentials_note(schedule)

    def scheduled_backups(self, *, root: str = "/") -> list[ScheduledBackup]:
        return _schedule.ScheduleHost(root).list()

    def load_schedule(self, name: str, *, root: str = "/") -> Schedule:
        return _schedule.ScheduleHost(root).load(name)

    def unschedule(self, name: str, *, root: str = "/") -> str:
        return _schedule.ScheduleHost(root).remove(name)

    # -- browsing an image's files (engine/browse.py, engine/imagefs.py)

    def image_partitions(self, manifest: Manifest) -> list[BrowsePartition]:
        """The partitions a browse mount shows, and which have files."""
        return _browse.browse_partitions(manifest)

    def mount_image(
        self,
        repo: Repository,
        ref: str,
        point: str,
        *,
        cache_bytes: int | None = None,
        partitions: Sequence[BrowsePartition] | None = None,
    ) -> ImageMount:
        """Mount image ``ref`` read-only on the empty folder ``point`` (root):
        ``diskD/pN/pN.img`` and ``diskD/pN/files/``. ``close()`` the result
        (or use it in a ``with``); it lists folders (``list_dir``) meanwhile."""
        _refuse_clonezilla_files(repo, ref)
        manifest = repo.load_manifest(ref)
        cache = cache_bytes or _imagefs.DEFAULT_CACHE_BYTES
        return _browse.mount_image(repo, manifest, point, cache_bytes=cache, only=partitions)

    def check_mount_point(self, point: str) -> None:
        """Before anything is opened: root, and ``point`` an empty, unmounted folder."""
        _browse.require_root("mounting an image")
        _browse.check_mount_point(point)

    def check_extract_destination(self, to: str) -> None:
        """Before anything is opened: root, and ``to`` a folder that is or can be made."""
        _browse.require_root("extracting files from an image")
        _browse.check_destination(to)

    def check_copy_destination(self, to: str) -> str:
        """The UI's "Copy marked files" destination as an absolute path, or
        one UsageError (not a folder, not writable, cannot be made)."""
        return _browse.check_destination(to, "destination")

    # Files and folders of a partition of a live browse mount copied out
    # (extract without a second mount): ``copy_from_image(mount, partition, paths, to)``.
    copy_from_image = staticmethod(
        _watched(deferred(lambda: _browse.ImageMount.copy_out), lambda mount: mount.repo)
    )

    def unmount_image(self, point: str) -> None:
        """End the browse mount on ``point``, whichever process serves it."""
        _browse.unmount_image(point)

    def extract(
        self,
        repo: Repository,
        ref: str,
        paths: Sequence[str],
        to: str,
        *,
        partition: str | None = None,
        cache_bytes: int | None = None,
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
    ) -> ExtractResult:
        """Copy files and folders of one partition of image ``ref`` into ``to``
        with their metadata (``partition``: ``N`` or ``diskD/pN``)."""
        _refuse_clonezilla_files(repo, ref)
        manifest = repo.load_manifest(ref)
        with _watching(repo, progress, cancel):
            return _browse.extract(
                repo,
                manifest,
                paths,
                to,
                partition=partition,
                cache_bytes=cache_bytes or _imagefs.DEFAULT_CACHE_BYTES,
                progress=progress,
                cancel=cancel,
            )

    # -- the rescue system itself

    def power_off(self, *, unattended: bool = False) -> bool:
        """Switch the machine off. ``unattended``: nobody asked at the keyboard, so
        only on the rescue system itself; False (nothing done) elsewhere."""
        return _power.switch("poweroff", asked_by_person=not unattended)

    def reboot(self) -> None:
        """Restart the machine, asked for by the person at it."""
        _power.switch("reboot", asked_by_person=True)

    def run_shell(self, shell: str) -> int:
        """A shell for the person at the keyboard, on the terminal, until they
        leave it; its exit status. CommandError when it cannot start."""
        return _run.interactive([shell])

    # -- local filesystems (the UI's media scan; every mount is in engine/mounts.py)

    def mounted(
        self, device: str, fstype: str | None, *, writable: bool = False
    ) -> AbstractContextManager[str]:
        """Mount ``device`` on a temporary folder for a ``with`` block (read-only
        unless ``writable``); always unmounted, lazily if busy."""
        return _mounts.mounted(device, fstype, writable=writable)

    def mount(self, device: str, point: str, *, options: Sequence[str] = ("ro",)) -> None:
        """Mount ``device`` on the folder ``point`` until ``umount`` (unattended
        mode's fixed folders for its repository and credentials media)."""
        _mounts.mount(device, point, options=options)

    def umount(self, point: str) -> None:
        _mounts.umount(point)

    def device_with_tag(self, key: str, value: str) -> str | None:
        """The device whose ``key`` (LABEL, UUID, PARTUUID, PARTLABEL) is ``value``."""
        return _probe.device_with_tag(key, value)

    def filesystem_type(self, device: str) -> str | None:
        """``vfat``, ``ext4``... on ``device``, None when nothing is recognised."""
        return _probe.filesystem_type(device)

    def serve_repository(
        self, root: str, bind: str, port: int, options: ServeOptions | None = None
    ) -> ThreadingHTTPServer:
        """An HTTP server (not yet serving) that shares the repository folder
        ``root`` read-only (or as ``options`` say), for `liferaft serve`.
        OSError if it cannot listen."""
        return _httpserve.make_server(root, bind, port, options)

    def served_folder(self, location: str, *, append_only: bool = False) -> str:
        """The local repository folder `liferaft serve` shares. Append-only, a
        new or empty folder is made ready for the first capture through the
        server, which creates the repository (plain or encrypted) there."""
        if is_remote(location):
            raise UsageError(
                "serve shares a local repository folder", hint="give --repo a path on this machine"
            )
        # (the server never reads an image: an encrypted repository stays locked)
        repo = self.open_repository(location, create=append_only, unlock=False)
        try:
            if append_only and not repo.store.has(REPO_FILE):
                repo.store.prepare_new()
            return repo.location
        finally:
            repo.close()

    @staticmethod
    def serve_options(
        *,
        append_only: bool = False,
        user: str | None = None,
        password_file: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        quiet: bool = False,
    ) -> ServeOptions:
        """`liferaft serve`'s settings checked (pairs given together, files
        readable, the certificate usable); UsageError naming what is wrong.
        ``quiet``: no line per request on stderr."""
        return _httpserve.check_options(append_only, user, password_file, tls_cert, tls_key, quiet)

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

    # -- checks of what a person typed (pure; static, so a form can call them early)

    @staticmethod
    def check_static(
        iface: str, address: str, gateway: str | None = None, dns: Sequence[str] = ()
    ) -> None:
        """UsageError naming what is wrong in typed static network settings."""
        _network.parse_static(iface, address, gateway, dns)

    @staticmethod
    def reject_password_in_url(location: str, password: str | None) -> None:
        """RepositoryError if a typed URL holds a password (it would be shown and logged)."""
        _reject_password_in_url(location, password)


def _refuse_clonezilla(repo: Repository, command: str) -> None:
    """A folder of Clonezilla images is read, never written (not even index.json)."""
    if isinstance(repo, _clonezilla.ClonezillaSource):
        raise RepositoryError(
            f"{repo.location} holds Clonezilla images: {command} works on liferaft repositories",
            hint="import them first ('liferaft import'), or remove them with Clonezilla's tools",
        )


def _refuse_clonezilla_files(repo: Repository, ref: str) -> None:
    """A Clonezilla image is served in order only (engine/clonezilla.py): the
    random reads of a browse mount would read it through again and again."""
    if isinstance(repo, _clonezilla.ClonezillaSource):
        raise UsageError(
            f"the files of Clonezilla image {ref} cannot be browsed or extracted directly",
            hint="import it into a liferaft repository first (liferaft import), then use that",
        )


@contextmanager
def _watching(
    repo: Repository, progress: ProgressCallback, cancel: CancelToken | None
) -> Iterator[None]:
    """For the length of one operation, the repository's store reports its
    retries on the operation's progress and stops them when it is cancelled."""
    # Operations on one repository may overlap (the UI's workers): each puts
    # back what it found, never deleting a watch that is not its own.
    earlier = vars(repo.store).get("watch")
    repo.store.watch = Watch(repo.location, progress, cancel)
    try:
        yield
    finally:
        if earlier is not None:
            repo.store.watch = earlier
        else:  # back to the store's quiet default
            vars(repo.store).pop("watch", None)
