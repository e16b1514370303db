"""Back up to and restore from an S3-compatible store (moto_server on loopback)."""

from __future__ import annotations

import os
import sys

import boto3
import pytest

from rescue_app.engine.disks import reread_partitions
from tests.enginekit import assert_one_line_error, check_restored, liferaft
from tests.stores.conftest import DISK_BYTES
from tests.stores.serverkit import free_port, running


@pytest.fixture
def s3(monkeypatch):
    port = free_port()
    moto = os.path.join(os.path.dirname(sys.executable), "moto_server")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with running([moto, "-H", "127.0.0.1", "-p", str(port)], port):
        endpoint = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="backups")
        yield endpoint


@pytest.mark.root
def test_capture_list_verify_restore_over_s3(captured, s3, loopdisk, monkeypatch):
    url = f"s3://backups/site/a?endpoint={s3}"
    out = liferaft("capture", "--repo", url, "--name", "cloud", captured.source.dev).stdout
    assert "captured cloud@" in out
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=s3).list_objects_v2(
        Bucket="backups", Prefix="site/a/images/")["Contents"]]
    assert len(keys) == 1 and keys[0].startswith("site/a/images/cloud/")
    # the endpoint may also come from the environment
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3)
    env_url = "s3://backups/site/a"
    assert "cloud@" in liferaft("images", "--repo", env_url).stdout
    assert ": OK" in liferaft("verify", "--repo", env_url, "cloud").stdout
    target = loopdisk(DISK_BYTES)
    liferaft("restore", "--repo", env_url, "--image", "cloud", "--to", target, "--yes")
    check_restored(captured.source, reread_partitions(target, len(captured.source.nodes)))


def test_missing_bucket_and_unreachable_endpoint(s3):
    proc = liferaft("images", "--repo", f"s3://nobucket/x?endpoint={s3}", check=False)
    assert_one_line_error(proc, "bucket 'nobucket' does not exist")
    proc = liferaft("images", "--repo", f"s3://backups/empty?endpoint={s3}", check=False)
    assert_one_line_error(proc, "no liferaft repository at s3://backups/empty")
    proc = liferaft("images", "--repo", f"s3://backups/x?endpoint=http://127.0.0.1:{free_port()}",
                    check=False)
    assert_one_line_error(proc, "cannot reach the S3 endpoint")
