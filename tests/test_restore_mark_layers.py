"""The "incomplete restore" mark stays until every layer is written (issue 12).

An md array, the inside of an unlocked LUKS volume and the logical volumes of
a volume group are written after the disks' partitions. A restore that stops
in one of those layers must leave the mark on every target disk (see
engine/restoremark.py). The host has no md driver and no mdadm, so creating
the array fails for real here: the disks are partitioned and marked, the array
is not made, and the disks must say so. (The whole md round trip runs in QEMU:
tests/guest/test_md_luks_vm.py.)
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import replace

import pytest

from rescue_app.engine import restoremark
from rescue_app.engine.extents import ExtentMap
from rescue_app.engine.keychain import CredentialChain
from rescue_app.engine.manifest import MdMemberImage, PartitionTable, Region
from rescue_app.engine.repository import Repository
from tests.enginekit import liferaft
from tests.test_md_luks_units import _array, _manifest

pytestmark = pytest.mark.root

MIB = 1024 * 1024


@pytest.mark.skipif(
    shutil.which("mdadm", path="/usr/sbin:/sbin:/usr/bin") is not None,
    reason="mdadm is installed here: the array would be made",
)
def test_restore_that_stops_at_the_md_array_leaves_the_mark(loopdisk, workdir):
    path = os.path.join(workdir, "repo")
    repo = Repository.open(path, credentials=CredentialChain(), create=True)
    data = os.urandom(4 * MIB)
    digest = repo.put_chunk(data).digest
    array = _array((MdMemberImage(0, 1, 0), MdMemberImage(1, 1, 1)))
    array = replace(array, used_map=ExtentMap([(0, 4 * MIB)]), chunks=(digest, None))
    m = replace(_manifest(array), chunk_size=4 * MIB)
    # a new disk id each (sfdisk sets it); no boot code (the head is the mark's place)
    disks = tuple(
        replace(d, table=PartitionTable("gpt", str(uuid.uuid4()).upper()), head=Region(0, 0, ()))
        for d in m.disks
    )
    repo.commit_manifest(replace(m, disks=disks))
    repo.close()
    targets = [loopdisk(140 * MIB), loopdisk(140 * MIB)]
    args = ["restore", "--repo", path, "--image", "srv", "--yes"]
    proc = liferaft(*args, *(a for t in targets for a in ("--to", t)), check=False)
    assert proc.returncode != 0, proc.stdout
    assert "mdadm" in proc.stderr, proc.stderr
    for t in targets:
        # partitioned, array not made: not a restored disk
        assert restoremark.read(t) is not None, t
