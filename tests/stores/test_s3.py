"""Back up to and restore from an S3-compatible store (moto_server on loopback)."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import time
from collections.abc import Iterator

import boto3
import pytest

from rescue_app.engine import CredentialChain
from rescue_app.engine.kernel import reread_partitions
from rescue_app.engine.stores.retry import RetryPolicy, Watch
from rescue_app.engine.stores.s3 import S3Store
from rescue_app.errors import CancelledError, RepositoryError
from rescue_app.progress import CancelToken, Progress
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
    keys = [
        o["Key"]
        for o in boto3.client("s3", endpoint_url=s3).list_objects_v2(
            Bucket="backups", Prefix="site/a/images/"
        )["Contents"]
    ]
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
    proc = liferaft(
        "images", "--repo", f"s3://backups/x?endpoint=http://127.0.0.1:{free_port()}", check=False
    )
    assert_one_line_error(proc, "cannot reach the S3 endpoint")


# -- one retry policy (issue 10 item 6, issue 11) ------------------------------------------


def test_unreachable_endpoint_at_first_contact_within_seconds(monkeypatch):
    """A port nobody listens on, a host name that does not resolve: seconds, one line."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    for endpoint, reason in (
        (f"http://127.0.0.1:{free_port()}", "connection refused"),
        ("http://no-such-host.invalid", "unknown host name"),
    ):
        started = time.monotonic()
        proc = liferaft("images", "--repo", f"s3://backups/x?endpoint={endpoint}", check=False)
        assert_one_line_error(proc, "cannot reach the S3 endpoint", reason)
        assert time.monotonic() - started < 5


@contextlib.contextmanager
def _moto(port: int) -> Iterator[None]:
    """moto_server on ``port`` holding bucket 'backups' with one object (it keeps
    objects in memory: a restarted server is given them again)."""
    moto = os.path.join(os.path.dirname(sys.executable), "moto_server")
    with running([moto, "-H", "127.0.0.1", "-p", str(port)], port):
        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}")
        client.create_bucket(Bucket="backups")
        client.put_object(Bucket="backups", Key="r/liferaft-repository.json", Body=b"{}")
        yield


@pytest.fixture
def lost_endpoint(s3, monkeypatch) -> Iterator[tuple[S3Store, int]]:
    """A store that has talked to its endpoint, which is then stopped."""
    port = free_port()
    store = S3Store(f"s3://backups/r?endpoint=http://127.0.0.1:{port}", CredentialChain.standard())
    try:
        with _moto(port):
            assert store.read("liferaft-repository.json") == b"{}"
        yield store, port
    finally:
        store.close()


def test_endpoint_back_after_a_restart_is_resumed_with_notices(lost_endpoint):
    store, port = lost_endpoint
    seen: list[Progress] = []
    store.watch = Watch(store.location, seen.append)
    with contextlib.ExitStack() as later:
        back = threading.Timer(2.0, lambda: later.enter_context(_moto(port)))
        back.start()
        try:
            assert store.read("liferaft-repository.json") == b"{}"
        finally:
            back.join()
    notices = [p.notice for p in seen if p.phase == "notice"]
    assert re.fullmatch(
        r"server unreachable \(connection refused\), retrying \(\d s of 60\)", notices[0]
    ), notices
    assert notices[-1] == "", "the notice is cleared once the endpoint answers"


def test_endpoint_gone_fails_at_the_deadline(lost_endpoint, monkeypatch):
    monkeypatch.setenv("LIFERAFT_RETRY_SECONDS", "2")
    store, _ = lost_endpoint
    store.policy = RetryPolicy.from_environment()
    seen: list[Progress] = []
    store.watch = Watch(store.location, seen.append)
    started = time.monotonic()
    with pytest.raises(RepositoryError) as info:
        store.read("index.json")
    assert time.monotonic() - started < 4
    assert "reading index.json from the S3 endpoint failed: connection refused" in str(info.value)
    assert "retried for 2 s" in info.value.hint
    assert [p for p in seen if p.notice]


def test_cancel_while_retrying_says_cancelled(lost_endpoint):
    store, _ = lost_endpoint
    cancel = CancelToken()

    def cancel_on_notice(p: Progress) -> None:
        if p.notice:
            cancel.cancel()

    store.watch = Watch(store.location, cancel_on_notice, cancel)
    started = time.monotonic()
    with pytest.raises(CancelledError) as info:
        store.read("index.json")
    assert time.monotonic() - started < 3
    assert "cancelled" in str(info.value) and "retried" not in str(info.value)
