"""S3 Object Lock (engine/stores/s3.py): images written with retention cannot
be deleted before their date, and prune leaves locked chunks alone. moto_server
on loopback, buckets created with ObjectLockEnabledForBucket."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest

from rescue_app.engine import CredentialChain
from rescue_app.engine.stores.s3 import S3Store
from rescue_app.errors import RepositoryError
from tests.enginekit import assert_one_line_error, liferaft
from tests.stores.conftest import Captured
from tests.stores.serverkit import moto_s3

ORPHAN_LOCKED = "ab" + "1" * 62
ORPHAN_FREE = "ab" + "2" * 62


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch, workdir: str) -> Iterator[str]:
    """moto_server with bucket "locked" (Object Lock on) and bucket "plain"."""
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_DEFAULT_REGION", "us-east-1"),
                        ("AWS_SECRET_ACCESS_KEY", "testing-secret")):  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with moto_s3(workdir) as endpoint:
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket="locked", ObjectLockEnabledForBucket=True)
        client.create_bucket(Bucket="plain")
        yield endpoint


def _objects(client: Any, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket="locked", Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


@pytest.mark.root
def test_locked_images_cannot_be_deleted_and_prune_skips_them(s3: str, captured: Captured):
    url = f"s3://locked/site?endpoint={s3}&object-lock=3"
    liferaft("capture", "--repo", url, "--name", "web", captured.source.dev)
    client = boto3.client("s3", endpoint_url=s3)
    soon = datetime.now(UTC) + timedelta(days=3)
    image_keys = _objects(client, "site/chunks/") + _objects(client, "site/images/")
    assert len(image_keys) > 10
    for key in image_keys:
        head = client.head_object(Bucket="locked", Key=key)
        assert head["ObjectLockMode"] == "COMPLIANCE", key
        assert abs(head["ObjectLockRetainUntilDate"] - soon) < timedelta(minutes=5), key
    assert "ObjectLockMode" not in client.head_object(Bucket="locked", Key="site/index.json")
    # a stolen key cannot delete them before the date
    for key in (image_keys[0], _objects(client, "site/images/")[0]):
        version = client.head_object(Bucket="locked", Key=key)["VersionId"]
        with pytest.raises(botocore.exceptions.ClientError, match="AccessDenied"):
            client.delete_object(Bucket="locked", Key=key, VersionId=version)

    # two chunks no image needs: one locked, one not
    store = S3Store(url, CredentialChain.standard())
    store.write(f"chunks/ab/{ORPHAN_LOCKED}", b"locked", durable=True)
    store.close()
    client.put_object(Bucket="locked", Key=f"site/chunks/ab/{ORPHAN_FREE}", Body=b"free")
    out = liferaft("prune", "--repo", url, "--grace", "0").stdout
    assert "marked 1 unused chunk(s)" in out
    assert "skipped 1 unused chunk(s) under S3 Object Lock" in out
    out = liferaft("prune", "--repo", url, "--grace", "0").stdout
    assert "freed" in out and "(1 chunks)" in out
    keys = _objects(client, "site/chunks/ab/")
    assert f"site/chunks/ab/{ORPHAN_LOCKED}" in keys
    assert not any(ORPHAN_FREE in k for k in keys)
    assert ": OK" in liferaft("verify", "--repo", url, "web").stdout


def test_lock_settings_and_refusals(s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # a bucket without Object Lock: one line before anything is written
    store = S3Store(f"s3://plain/r?endpoint={s3}&object-lock=3", CredentialChain.standard())
    with pytest.raises(RepositoryError, match="does not have it enabled"):
        store.check_writable()
    for bad, needle in (
        ("object-lock=soon", "not a number of days"),
        ("object-lock=3&object-lock-mode=forever", "mode 'forever' is not known"),
        ("object-lock-mode=governance", "without object-lock=DAYS"),
    ):
        proc = liferaft("images", "--repo", f"s3://locked/r?endpoint={s3}&{bad}", check=False)
        assert_one_line_error(proc, needle)

    # the credentials entry's setting, and governance mode
    creds = tmp_path / "credentials.yaml"
    creds.write_text(
        "credentials:\n  - match: s3://locked\n    access_key_id: testing\n"
        "    secret_access_key: testing-secret\n    object_lock_days: 2\n"
        "    object_lock_mode: governance\n"
    )
    creds.chmod(0o600)
    monkeypatch.setenv("LIFERAFT_CREDENTIALS", str(creds))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store = S3Store(f"s3://locked/g?endpoint={s3}", CredentialChain.standard())
    assert store.lock == (2, "governance")
    store.check_writable()
    store.write("images/x/20260101T000000Z.json", b"{}", durable=True)
    client = boto3.client("s3", endpoint_url=s3, aws_access_key_id="t", aws_secret_access_key="t")
    head = client.head_object(Bucket="locked", Key="g/images/x/20260101T000000Z.json")
    assert head["ObjectLockMode"] == "GOVERNANCE"
    # a chunk a new image reuses gets its date moved forward
    client.put_object(
        Bucket="locked", Key="g/chunks/cd/old", Body=b"x", ObjectLockMode="GOVERNANCE",
        ObjectLockRetainUntilDate=datetime.now(UTC) + timedelta(hours=1),
    )  # fmt: skip
    assert store.has("chunks/cd/old")
    until = client.head_object(Bucket="locked", Key="g/chunks/cd/old")["ObjectLockRetainUntilDate"]
    assert until > datetime.now(UTC) + timedelta(days=1, hours=23)
    store.close()
