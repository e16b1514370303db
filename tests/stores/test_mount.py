"""smb:// and nfs:// stores: what they ask the kernel to mount, and that the
password never reaches argv. The host kernel has no cifs/nfs client, so the
mount itself is replaced here by a fake ``run``; the real mount happens only
in the rescue system."""

from __future__ import annotations

import os
import re
import shutil
import stat

import pytest

from rescue_app.engine import CredentialChain
from rescue_app.engine import mounts as engine_mounts
from rescue_app.engine.stores import open_store
from rescue_app.engine.stores.mount import MountStore, mount_argv, plan_mount
from rescue_app.errors import CommandError, RepositoryError
from tests.enginekit import assert_one_line_error, liferaft

SECRET = "smb-Pw-9x!never-shown"


def test_plans():
    p = plan_mount("smb://WORK;ann@nas:4455/backups/site/repo?vers=3.0")
    assert (p.fstype, p.source, p.subdir, p.user, p.domain) == (
        "cifs",
        "//nas/backups",
        "site/repo",
        "ann",
        "WORK",
    )
    assert p.options == ("port=4455", "vers=3.0")
    assert p.location == "smb://WORK;ann@nas:4455/backups/site/repo"
    assert mount_argv(p, "/mnt/x", "/run/c") == [
        "mount",
        "-t",
        "cifs",
        "-o",
        "credentials=/run/c,port=4455,vers=3.0",
        "//nas/backups",
        "/mnt/x",
    ]
    guest = plan_mount("smb://nas/public")
    assert guest.options == ("guest",) and guest.subdir == "" and guest.user is None
    nfs = plan_mount("nfs://filer/export/liferaft")
    assert mount_argv(nfs, "/m", None) == [
        "mount",
        "-t",
        "nfs4",
        "-o",
        "hard",
        "filer:/export/liferaft",
        "/m",
    ]
    assert nfs.location == "nfs://filer/export/liferaft"
    with pytest.raises(RepositoryError, match="holds a password"):
        plan_mount("smb://ann:pw@nas/share")
    with pytest.raises(RepositoryError, match="names no share"):
        plan_mount("smb://nas/")


def test_smb_password_goes_through_a_private_file_only(monkeypatch, tmp_path):
    calls: list[tuple[list[str], str, int]] = []

    def fake_run(argv, **kw):
        if argv[0] == "mount":
            opts = argv[argv.index("-o") + 1].split(",")
            cred = next(o for o in opts if o.startswith("credentials="))[len("credentials=") :]
            mode = stat.S_IMODE(os.stat(cred).st_mode)
            calls.append((list(argv), open(cred).read(), mode))
            os.makedirs(os.path.join(argv[-1], "site"))
        else:
            calls.append((list(argv), "", 0))

    monkeypatch.setattr(engine_mounts, "run", fake_run)  # mount and umount go through there
    monkeypatch.setenv("LIFERAFT_PASSWORD", SECRET)
    store = open_store("smb://ann@nas/backups/site", CredentialChain.standard())
    assert isinstance(store, MountStore)
    ((argv, cred_text, mode),) = calls
    assert SECRET not in " ".join(argv) and SECRET not in store.location
    assert cred_text == f"username=ann\npassword={SECRET}\n" and mode == 0o600
    cred = argv[argv.index("-o") + 1].split(",")[0].split("=", 1)[1]
    assert not os.path.exists(cred)  # gone once the mount is done
    point = store.mountpoint
    # from here on it is a local folder
    store.prepare_new()
    store.write("liferaft-repository.json", b"{}", durable=True)
    assert store.read("liferaft-repository.json") == b"{}"
    problem = str(store.missing(create_hint=False))
    assert store.location in problem and point not in problem  # messages name the share
    store.close()
    assert calls[-1][0] == ["umount", point]
    store.close()  # twice is harmless (atexit calls it again)
    assert len(calls) == 2
    shutil.rmtree(point)  # the fake mount wrote into the folder itself


def test_mount_errors_have_their_own_messages(monkeypatch):
    def failing(stderr):
        def fake_run(argv, **kw):
            if not stderr:
                raise CommandError("mount did not finish within 60 s")
            raise CommandError("mount failed", stderr=stderr)

        return fake_run

    monkeypatch.setenv("LIFERAFT_PASSWORD", SECRET)
    # What mount.cifs and mount.nfs4 print (seen in the rescue system against
    # smbd and nfs-ganesha in tests/boot/test_netstores_vm.py).
    for url, stderr, needle in [
        (
            "smb://ann@nas/backups",
            "mount error(13): Permission denied\nRefer to the "
            "mount.cifs(8) manual page (e.g. man mount.cifs)",
            "wrong user name or password",
        ),
        (
            "smb://ann@nas/backups",
            "mount error(2): No such file or directory",
            "no share named 'backups'",
        ),
        ("smb://ann@nas/backups", "mount error(112): Host is down", "cannot reach the server"),
        (
            "smb://ann@nas/backups",
            "mount error(111): could not connect to 10.0.2.2",
            "cannot reach the server",
        ),
        ("smb://ann@nas/backups", "mount: unknown filesystem type 'cifs'", "cannot mount cifs"),
        (
            "nfs://filer/srv/x",
            "mount.nfs4: mounting filer:/srv/x failed, reason given by "
            "server: No such file or directory",
            "exports no /srv/x",
        ),
        (
            "nfs://filer/srv/x",
            "mount.nfs4: access denied by server while mounting filer:/srv/x",
            "refused access to the NFS export",
        ),
        ("nfs://filer/srv/x", "mount.nfs4: Connection refused", "cannot reach the server"),
        ("nfs://filer/srv/x", "", "cannot reach the server"),  # run()'s timeout
    ]:
        monkeypatch.setattr(engine_mounts, "run", failing(stderr))
        with pytest.raises(RepositoryError, match=re.escape(needle)) as info:
            open_store(url, CredentialChain.standard())
        assert SECRET not in str(info.value)
        assert "\n" not in str(info.value)


@pytest.mark.root
def test_this_kernel_has_no_cifs_client_one_line(monkeypatch):
    if os.path.exists("/proc/fs/cifs"):
        pytest.skip("this kernel has a CIFS client")
    monkeypatch.setenv("LIFERAFT_PASSWORD", SECRET)
    proc = liferaft("images", "--repo", "smb://ann@127.0.0.1/share", check=False)
    line = assert_one_line_error(proc, "smb://ann@127.0.0.1/share")
    assert SECRET not in proc.stderr and SECRET not in line
