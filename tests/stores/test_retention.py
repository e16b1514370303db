"""forget and prune (issue 14): the keep rules, dry runs, two-phase prune on
real stores (a local folder, moto's S3 server, OpenSSH's SFTP), a capture that
reuses a marked chunk, and a prune killed mid-delete."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta

import boto3
import pytest

from rescue_app.engine import CredentialChain, Engine, KeepPolicy
from rescue_app.engine.kernel import reread_partitions
from rescue_app.engine.manifest import DiskImage, Manifest, PartitionTable, Region
from rescue_app.engine.prune import CANDIDATES_FILE, PruneResult, prune
from rescue_app.engine.repository import (
    CANDIDATE_SUFFIX,
    CHUNK_SIZE,
    Repository,
    chunk_digest,
    chunk_rel,
)
from rescue_app.engine.retention import ImageTime, KeepRule, select
from rescue_app.errors import RepositoryError, UsageError
from tests.enginekit import (
    REPO_ROOT,
    assert_one_line_error,
    check_restored,
    cli_argv,
    files_below,
    liferaft,
)
from tests.stores.conftest import DISK_BYTES
from tests.stores.serverkit import moto_s3, sshd

T = datetime(2026, 1, 1, tzinfo=UTC)

# Newest first; hand-worked below for: last 2, daily 4, weekly 3, monthly 4, yearly 3.
WHEN = [
    datetime(2026, 3, 1, 9, tzinfo=UTC),  # 0: Sunday, ISO 2026-W09
    datetime(2026, 2, 1, 9, tzinfo=UTC),  # 1: Sunday, W05
    datetime(2026, 1, 19, 9, tzinfo=UTC),  # 2: Monday, W04
    datetime(2026, 1, 12, 9, tzinfo=UTC),  # 3
    datetime(2026, 1, 5, 9, tzinfo=UTC),  # 4
    datetime(2026, 1, 3, 9, tzinfo=UTC),  # 5
    datetime(2026, 1, 2, 9, tzinfo=UTC),  # 6
    datetime(2026, 1, 1, 22, tzinfo=UTC),  # 7: the newest of 1 January
    datetime(2026, 1, 1, 10, tzinfo=UTC),  # 8: same day, older
    datetime(2025, 12, 31, 23, tzinfo=UTC),  # 9: newest of December and of 2025
    datetime(2025, 6, 1, 9, tzinfo=UTC),  # 10
    datetime(2024, 6, 1, 9, tzinfo=UTC),  # 11: newest (only) of 2024
]


def _id(t: datetime) -> str:
    return t.strftime("%Y%m%dT%H%M%SZ")


def _images(name: str = "web") -> list[ImageTime]:
    return [ImageTime(name, _id(t), t) for t in WHEN]


# -- the rules, purely -------------------------------------------------------------------


def test_rules_are_ored_and_each_period_keeps_its_newest():
    policy = KeepPolicy(last=2, daily=4, weekly=3, monthly=4, yearly=3)
    plan = select(_images() + [ImageTime("db", _id(WHEN[11]), WHEN[11])], policy)
    kept = {d.image.ref: d.kept_by for d in plan.decisions if d.keep}
    web = {WHEN.index(i.created) for i in plan.kept if i.name == "web"}
    assert web == {0, 1, 2, 3, 9, 11}
    L, D, W, M, Y = (
        KeepRule.LAST,
        KeepRule.DAILY,
        KeepRule.WEEKLY,
        KeepRule.MONTHLY,
        KeepRule.YEARLY,
    )
    assert kept[f"web@{_id(WHEN[0])}"] == (L, D, W, M, Y)
    assert kept[f"web@{_id(WHEN[2])}"] == (D, W, M)
    assert kept[f"web@{_id(WHEN[3])}"] == (D,)
    assert kept[f"web@{_id(WHEN[9])}"] == (M, Y)
    assert kept[f"web@{_id(WHEN[11])}"] == (Y,)
    # per name: db's one image is its newest of everything
    assert kept[f"db@{_id(WHEN[11])}"] == (L, D, W, M, Y)
    assert len(plan.removed) == 6


def test_a_day_keeps_its_newest_image_only():
    plan = select(_images(), KeepPolicy(daily=8))
    assert [WHEN.index(i.created) for i in plan.kept] == [0, 1, 2, 3, 4, 5, 6, 7]
    plan = select(_images(), KeepPolicy(hourly=100))
    assert len(plan.kept) == 12  # every image its own hour
    plan = select(_images(), KeepPolicy(yearly=1))
    assert [WHEN.index(i.created) for i in plan.kept] == [0]


def test_no_rule_is_never_delete_everything():
    with pytest.raises(UsageError, match="at least one --keep"):
        KeepPolicy()
    with pytest.raises(UsageError, match="negative"):
        KeepPolicy(daily=-1)


# -- repositories with images made through the repository API ---------------------------


def _chunk(seed: int) -> bytes:
    return random.Random(seed).randbytes(64 * 1024)


def make_image(repo: Repository, name: str, when: datetime, seeds: list[int]) -> str:
    """A committed image whose disk head is the chunks of ``seeds`` (verify and
    prune read it like any other)."""
    digests = tuple(repo.put_chunk(_chunk(s)).digest for s in seeds)
    m = Manifest(
        name=name,
        id=_id(when),
        created=when.isoformat().replace("+00:00", "Z"),
        host=name,
        liferaft_version="test",
        chunk_size=CHUNK_SIZE,
        chunk_hash="sha256",
        compression="zstd",
        disks=(
            DiskImage(
                index=0,
                model="test disk",
                serial="T1",
                wwn=None,
                size=1 << 30,
                logical_sector_size=512,
                physical_sector_size=512,
                transport=None,
                table=PartitionTable("gpt", None),
                head=Region(0, len(digests) * CHUNK_SIZE, digests),
                gpt_backup=None,
                partitions=(),
            ),
        ),
    )
    repo.commit_manifest(m)
    return m.ref


def _open(location: str, create: bool = False) -> Repository:
    return Repository.open(location, credentials=CredentialChain.standard(), create=create)


@pytest.fixture
def dated(workdir) -> tuple[str, dict[int, str]]:
    """12 images of 'web' on WHEN's dates, each with one chunk of its own and
    one shared by all (seed 0)."""
    path = os.path.join(workdir, "repo")
    repo = _open(path, create=True)
    refs = {i: make_image(repo, "web", t, [0, 100 + i]) for i, t in enumerate(WHEN)}
    return path, refs


def test_forget_dry_run_lists_and_changes_nothing(dated):
    path, refs = dated
    before = files_below(path)
    out = liferaft(
        "forget",
        "--repo",
        path,
        "--keep-last",
        "2",
        "--keep-daily",
        "4",
        "--keep-weekly",
        "3",
        "--keep-monthly",
        "4",
        "--keep-yearly",
        "3",
        "--dry-run",
    ).stdout
    assert f"keep   {refs[9]}  (monthly, yearly)" in out
    assert f"keep   {refs[0]}  (last, daily, weekly, monthly, yearly)" in out
    assert f"remove {refs[8]}" in out
    assert "6 image(s) kept, 6 to remove" in out and "dry run: nothing was removed" in out
    assert files_below(path) == before


def test_forget_without_a_rule_is_one_line_and_removes_nothing(dated):
    path, _refs = dated
    before = files_below(path)
    proc = liferaft("forget", "--repo", path, check=False)
    assert proc.returncode == 2
    assert_one_line_error(proc, "at least one --keep")
    proc = liferaft(
        "forget", "--repo", path, "--keep-last", "1", "--prune", "--grace", "x", check=False
    )
    assert_one_line_error(proc, "not a duration")
    proc = liferaft("forget", "--repo", path, "--name", "nobody", "--keep-last", "1", check=False)
    assert_one_line_error(proc, "no image named 'nobody'")
    assert files_below(path) == before


def test_forget_then_prune_frees_only_what_forgotten_images_used(dated):
    path, refs = dated
    only_forgotten = {chunk_rel(chunk_digest(_chunk(100 + i))) for i in (4, 5, 6, 7, 8, 10)}
    out = liferaft(
        "forget", "--repo", path, "--keep-daily", "4", "--keep-monthly", "4", "--keep-yearly", "3"
    ).stdout
    assert "removed 6 image(s)" in out
    images = liferaft("images", "--repo", path).stdout
    assert refs[0] in images and refs[8] not in images
    assert len(_open(path).manifest_refs()) == 6
    with open(os.path.join(path, "index.json")) as f:  # what HTTP readers list
        assert len(json.load(f)["images"]) == 6
    # phase 1: marked, still readable; every kept image verifies
    out = liferaft("prune", "--repo", path, "--grace", "1h").stdout
    assert "marked 6 unused chunk(s)" in out and "deleted by a prune run after" in out
    for rel in only_forgotten:
        assert not os.path.exists(os.path.join(path, rel))
        assert os.path.exists(os.path.join(path, rel + CANDIDATE_SUFFIX))
    assert ": OK" in liferaft("verify", "--repo", path).stdout
    # within the grace period nothing more happens
    out = liferaft("prune", "--repo", path, "--grace", "1h").stdout
    assert "6 marked chunk(s) are deleted by a prune run after" in out
    # phase 2
    sizes = sum(os.path.getsize(os.path.join(path, r + CANDIDATE_SUFFIX)) for r in only_forgotten)
    out = liferaft("prune", "--repo", path, "--grace", "0").stdout
    assert "(6 chunks); 0 marked chunk(s) were in use again" in out, out
    result_bytes = sizes
    assert f"freed {_human(result_bytes)}" in out
    for rel in only_forgotten:
        assert not os.path.exists(os.path.join(path, rel))
        assert not os.path.exists(os.path.join(path, rel + CANDIDATE_SUFFIX))
    assert not os.path.exists(os.path.join(path, CANDIDATES_FILE))
    assert "verified 6 image(s)" in liferaft("verify", "--repo", path).stdout
    # nothing left to do
    assert "nothing to prune" in liferaft("prune", "--repo", path, "--grace", "0").stdout


def test_forget_with_prune_marks_at_once(dated):
    path, refs = dated
    out = liferaft("forget", "--repo", path, "--keep-last", "3", "--prune", "--grace", "0").stdout
    assert "removed 9 image(s)" in out and "marked 9 unused chunk(s)" in out, out
    out = liferaft("prune", "--repo", path, "--grace", "0").stdout
    assert "(9 chunks); 0 marked chunk(s) were in use again" in out, out
    report = liferaft("verify", "--repo", path).stdout
    assert "verified 3 image(s)" in report and ": OK" in report


def test_a_folder_of_clonezilla_images_is_never_written(workdir):
    from rescue_app.engine.clonezilla import ClonezillaSource

    source = ClonezillaSource(workdir, {})
    with pytest.raises(RepositoryError, match="holds Clonezilla images: forget"):
        Engine().forget(source, KeepPolicy(last=1))
    with pytest.raises(RepositoryError, match="holds Clonezilla images: prune"):
        Engine().prune(source)
    assert os.listdir(workdir) == []


def _human(n: int) -> str:
    from rescue_app.engine import human_size

    return human_size(n)


def test_candidates_whose_list_was_lost_are_marked_again(dated):
    path, _refs = dated
    repo = _open(path)
    repo.remove_images(repo.manifest_refs()[:3])
    assert prune(repo, grace=timedelta(0)).marked_chunks == 3
    with open(os.path.join(path, CANDIDATES_FILE), "w") as f:
        f.write("{damaged")
    again = prune(repo, grace=timedelta(0))  # a fresh mark takes them in
    assert not again.swept and again.pending_chunks == 3
    swept = prune(repo, grace=timedelta(0))
    assert swept.freed_chunks == 3
    assert not any(n.endswith(CANDIDATE_SUFFIX) for n in files_below(path))
    assert not os.path.exists(os.path.join(path, CANDIDATES_FILE))
    assert Engine().verify(repo).ok


def test_prune_refuses_a_damaged_manifest(dated):
    path, refs = dated
    name, image_id = refs[3].split("@")
    with open(os.path.join(path, "images", name, f"{image_id}.json"), "w") as f:
        f.write('{"format": "liferaft-manifest", "vers')
    before = files_below(path)
    proc = liferaft("prune", "--repo", path, "--grace", "0", check=False)
    assert_one_line_error(proc, "nothing was deleted", "corrupt")
    assert files_below(path) == before


def test_prune_over_http_is_refused(dated):
    path, _refs = dated
    server = Engine().serve_repository(path, "127.0.0.1", 0)
    import threading

    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        proc = liferaft("prune", "--repo", url, check=False)
        assert_one_line_error(proc, "read-only")
        proc = liferaft("forget", "--repo", url, "--keep-last", "1", check=False)
        assert_one_line_error(proc, "read-only")
    finally:
        server.shutdown()
        server.server_close()


# -- a capture that found a chunk just before prune marked it ------------------------------


@pytest.fixture
def s3(monkeypatch, workdir):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with moto_s3(workdir) as endpoint:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="backups")
        yield endpoint


@pytest.fixture
def sftp(workdir, monkeypatch):
    """OpenSSH on loopback; yields the URL prefix of its files (sftp://root@127.0.0.1:PORT)."""
    with sshd(os.path.join(workdir, "sshd")) as server:
        monkeypatch.setenv("LIFERAFT_SSH_KEY", server.client_key)
        monkeypatch.setenv("LIFERAFT_SSH_KNOWN_HOSTS", server.known_hosts)
        yield f"sftp://root@127.0.0.1:{server.port}"


@pytest.fixture(params=["local", "s3", "sftp"])
def location(request, workdir):
    if request.param == "local":
        return os.path.join(workdir, "repo")
    if request.param == "s3":
        return f"s3://backups/r?endpoint={request.getfixturevalue('s3')}"
    return f"{request.getfixturevalue('sftp')}{workdir}/remote"


def test_a_capture_reusing_marked_chunks_keeps_them(location):
    """The interleaving that breaks a one-phase prune: a capture checks a
    chunk (present), prune marks it, the capture commits an image naming it.
    Here the image verifies throughout and the sweep keeps the chunk."""
    repo = _open(location, create=True)
    make_image(repo, "old", T, list(range(1, 9)))
    kept = make_image(repo, "kept", T, [50, 51])
    repo.remove_images([("old", _id(T))])  # chunks 1-8 are garbage now
    # the capture of 'new' has checked chunks 1-4 (present: not stored again) ...
    assert all(repo.put_chunk(_chunk(s)).stored_bytes == 0 for s in (1, 2, 3, 4))
    clock = [T + timedelta(days=30)]
    first = prune(repo, grace=timedelta(hours=1), now=lambda: clock[0])
    assert first.marked_chunks == 8 and not first.swept and first.referenced_chunks == 2
    # ... and after the mark finds 5-8 absent: stored again
    assert all(repo.put_chunk(_chunk(s)).stored_bytes > 0 for s in (5, 6, 7, 8))
    new = make_image(repo, "new", T + timedelta(days=30), list(range(1, 9)))
    assert Engine().verify(repo).ok  # 1-4 read from their candidates
    everything = {chunk_digest(_chunk(s)) for s in range(1, 9)}
    assert repo.missing_chunks(everything) == set()  # what a restore checks first
    clock[0] += timedelta(minutes=30)
    waiting = prune(repo, grace=timedelta(hours=1), now=lambda: clock[0])
    assert not waiting.swept and waiting.pending_chunks == 8
    clock[0] += timedelta(hours=1)
    second = prune(repo, grace=timedelta(hours=1), now=lambda: clock[0])
    assert second.swept and second.rescued_chunks == 8 and second.freed_chunks == 0
    assert second.marked_chunks == 0 and second.pending_chunks == 0
    for s in range(1, 9):
        rel = chunk_rel(chunk_digest(_chunk(s)))
        assert repo.store.has(rel) and not repo.store.has(rel + CANDIDATE_SUFFIX)
    report = Engine().verify(repo)
    assert report.ok and set(report.refs) == {new, kept}
    # and once 'new' is forgotten, its chunks go in two runs
    repo.remove_images([tuple(new.split("@"))])  # type: ignore[list-item]
    assert prune(repo, grace=timedelta(0)).marked_chunks == 8
    third = prune(repo, grace=timedelta(0))
    assert third.freed_chunks == 8 and third.freed_bytes > 8 * 64 * 1024
    assert Engine().verify(repo).ok
    repo.close()


# -- a prune killed mid-delete --------------------------------------------------------------


def test_prune_killed_mid_delete_leaves_a_whole_repository(s3, workdir):
    url = f"s3://backups/crash?endpoint={s3}"
    repo = _open(url, create=True)
    make_image(repo, "gone", T, list(range(1000, 1400)))
    kept = make_image(repo, "kept", T, [1000, 1001, 7])  # shares two of gone's chunks
    repo.remove_images([("gone", _id(T))])
    client = boto3.client("s3", endpoint_url=s3)

    def count(suffix: str) -> int:
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket="backups", Prefix="crash/chunks/"
        )
        return sum(1 for p in pages for o in p.get("Contents", []) if o["Key"].endswith(suffix))

    def killed_when(condition) -> None:
        proc = subprocess.Popen(
            cli_argv("prune", "--repo", url, "--grace", "0"),
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while not condition() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert proc.poll() is None, "prune finished before it could be killed"
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait()

    # killed while marking (renaming), then while deleting
    killed_when(lambda: count(CANDIDATE_SUFFIX) >= 50)
    assert 50 <= count(CANDIDATE_SUFFIX) < 398
    assert ": OK" in liferaft("verify", "--repo", url).stdout
    out = liferaft("prune", "--repo", url, "--grace", "0").stdout  # finishes the mark
    assert "marked" in out
    marked = count(CANDIDATE_SUFFIX)
    assert marked == 398
    killed_when(lambda: count(CANDIDATE_SUFFIX) <= marked - 50)
    assert 0 < count(CANDIDATE_SUFFIX) <= marked - 50
    report = liferaft("verify", "--repo", url).stdout
    assert "verified 1 image(s), 3 chunks" in report and ": OK" in report
    out = liferaft("prune", "--repo", url, "--grace", "0").stdout
    assert "freed" in out
    assert count(CANDIDATE_SUFFIX) == 0 and count("") == 3
    assert kept in liferaft("images", "--repo", url).stdout
    assert ": OK" in liferaft("verify", "--repo", url).stdout


# -- prune in one process while another captures into the same repository ------------------


def _read_bytes(pid: int) -> int:
    """What process ``pid`` has read from block devices so far."""
    try:
        with open(f"/proc/{pid}/io") as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith("read_bytes:"))
    except (OSError, StopIteration):
        return 0


@pytest.mark.root
@pytest.mark.parametrize("kind", ["local", "s3", "sftp"])
def test_prune_racing_a_capture(kind, captured, loopdisk, workdir, request):
    """'src' is removed, so every chunk the capture of the same disk needs is
    garbage; prune marks while the capture runs and sweeps after the grace
    period. Then the new image and every kept image verify, the new image
    restores identically, and only the forgotten synthetic image's chunks are gone."""
    if kind == "local":
        url = os.path.join(workdir, "race")
        shutil.copytree(captured.repo, url)
    elif kind == "sftp":  # the server's files are this machine's
        shutil.copytree(captured.repo, os.path.join(workdir, "race"))
        url = f"{request.getfixturevalue('sftp')}{workdir}/race"
    else:
        url = f"s3://backups/race?endpoint={request.getfixturevalue('s3')}"
        liferaft("capture", "--repo", url, "--name", "src", captured.source.dev)
    repo = _open(url)
    make_image(repo, "junk", T, list(range(300, 310)))
    junk_new = make_image(repo, "junk", T + timedelta(days=1), [300, 400])
    only_old_junk = [chunk_rel(chunk_digest(_chunk(s))) for s in range(301, 310)]
    liferaft("forget", "--repo", url, "--name", "junk", "--keep-last", "1")
    repo.remove_images(repo.resolve("src") for _ in [0])
    grace = 20.0  # a capture of this small disk takes a few seconds, more on a busy machine
    started = time.monotonic()
    child = subprocess.Popen(
        cli_argv("capture", "--repo", url, "--name", "b", captured.source.dev),
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    results: list[PruneResult] = []
    try:
        # The first prune marks once the capture has read 16 MiB of the disk;
        # where that falls among its look-ups varies (seen: before all of them
        # on the local folder, so every chunk was stored again; after all of
        # them on S3, so the new image named only candidates until the sweep
        # renamed them back). The later runs wait for the grace period.
        while child.poll() is None and _read_bytes(child.pid) < 16 << 20:
            time.sleep(0.002)
        while child.poll() is None:
            results.append(prune(repo, grace=timedelta(seconds=grace)))
            time.sleep(0.02)
        capture_seconds = time.monotonic() - started
        out, err = child.communicate()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err
    assert capture_seconds < grace, out  # the grace period's premise
    assert results and results[0].marked_chunks >= 9, results  # marked while it ran
    assert ": OK" in liferaft("verify", "--repo", url).stdout  # before the sweep too
    due = datetime.fromisoformat(results[0].deletable_after.replace("Z", "+00:00"))
    time.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()) + 1)
    swept = prune(repo, grace=timedelta(seconds=grace))
    assert swept.swept and swept.freed_chunks == 9, swept
    # every marked chunk of src the capture needed was kept, whichever way; none
    # were marked when the capture's manifest landed before the first listing
    # (a busy machine): the interleaving itself is forced in the test above
    assert swept.rescued_chunks == results[0].marked_chunks - 9, (results[0], swept)
    captured_ref = re.search(r"captured (b@\S+):", out)
    assert captured_ref is not None, out
    new = captured_ref.group(1)
    report = liferaft("verify", "--repo", url).stdout
    assert "verified 2 image(s)" in report and ": OK" in report, report
    assert {new, junk_new} <= set(liferaft("images", "--repo", url).stdout.split())
    for rel in only_old_junk:
        assert not repo.store.has(rel) and not repo.store.has(rel + CANDIDATE_SUFFIX)
    target = loopdisk(DISK_BYTES)
    liferaft("restore", "--repo", url, "--image", new, "--to", target, "--yes")
    check_restored(captured.source, reread_partitions(target, len(captured.source.nodes)))
    repo.close()
