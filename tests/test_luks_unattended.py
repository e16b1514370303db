"""An unattended restore of an image with an unlocked LUKS volume (issue 12)
takes its passphrase from the credentials file (``match: luks:<UUID>``,
``passphrase_file``), like a repository's, never from the kernel command line;
without an entry it fails in one line naming where to put it, nothing written.
(The LUKS restore itself runs in QEMU: tests/guest/test_md_luks_vm.py.)"""

from __future__ import annotations

import os
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from rescue_app import unattended
from rescue_app.engine.keychain import CredentialChain
from rescue_app.engine.manifest import Method, PartitionTable
from rescue_app.engine.repository import Repository
from rescue_app.profile import Unattended
from tests.helpers.diskkit import disk_bytes_sha256
from tests.test_md_luks_units import UNLOCKED, _luks_manifest

pytestmark = pytest.mark.root

MIB = 1024 * 1024


def _repo_with_unlocked_luks(path: str) -> None:
    repo = Repository.open(path, credentials=CredentialChain(), create=True)
    d = repo.put_chunk(os.urandom(4 * MIB)).digest
    volume = replace(
        UNLOCKED, header=replace(UNLOCKED.header, chunks=(d, None, None, None)), chunks=(d,) * 5
    )
    m = _luks_manifest(Method.LUKS, (volume,))
    disk = replace(m.disks[0], table=PartitionTable("gpt", str(uuid.uuid4()).upper()))
    repo.commit_manifest(replace(m, disks=(disk,)))
    repo.close()


def test_unattended_luks_restore_names_the_credentials_entry(
    loopdisk, workdir, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = os.path.join(workdir, "repo")
    _repo_with_unlocked_luks(repo)
    target = loopdisk(80 * MIB)
    before = disk_bytes_sha256(target, 0, 80 * MIB)
    creds = Path(workdir) / "credentials.yaml"
    creds.write_text("credentials: []\n")
    creds.chmod(0o600)
    monkeypatch.delenv("LIFERAFT_LUKS_PASSPHRASE", raising=False)
    monkeypatch.setattr(unattended, "LOG_FILE", Path(workdir) / "u.log")
    code = unattended.run_unattended(
        f"liferaft.action=restore liferaft.repo={repo} liferaft.image=lap "
        f"liferaft.target={target} liferaft.credentials={creds}",
        Unattended(),
        power_off=lambda: None,
    )
    out = capsys.readouterr().out
    assert code != 0 and "RESTORE: FAILED" in out, out
    detail = out.split("RESTORE: FAILED", 1)[1].splitlines()[1]
    assert "no passphrase for the LUKS volume 12cb5bec" in detail, detail
    assert f"credentials file {creds}" in detail and "luks:12cb5bec" in detail, detail
    assert "passphrase_file" in detail, detail
    assert disk_bytes_sha256(target, 0, 80 * MIB) == before  # nothing written


def test_unattended_capture_unlock_reaches_the_engine(
    loopdisk, workdir, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``unlock: true`` in the profile's unattended section (or liferaft.unlock=1)
    is capture --unlock: on a disk without LUKS it fails like the CLI, in one
    line, and no repository is written (the unlocked capture itself: guest)."""
    from tests.helpers.diskkit import make_fs

    source = loopdisk(64 * MIB)
    make_fs(source, "ext4")
    repo = os.path.join(workdir, "repo")
    monkeypatch.setattr(unattended, "LOG_FILE", Path(workdir) / "u.log")
    code = unattended.run_unattended(
        f"liferaft.action=capture liferaft.repo={repo} liferaft.image=lap liferaft.target={source}",
        Unattended(unlock=True),
        power_off=lambda: None,
    )
    out = capsys.readouterr().out
    assert code != 0 and "CAPTURE: FAILED" in out, out
    detail = out.split("CAPTURE: FAILED", 1)[1].splitlines()[1]
    assert f"--unlock: there is no LUKS volume on {source}" in detail, detail
    assert not any(os.scandir(repo)) if os.path.isdir(repo) else True
    action = unattended.resolve_action(
        unattended.parse_cmdline(
            "liferaft.action=capture liferaft.repo=r liferaft.image=i "
            "liferaft.target=/dev/sdz liferaft.unlock"
        ),
        None,
    )
    assert action is not None and action.unlock
