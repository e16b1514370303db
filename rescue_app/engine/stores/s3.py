"""A repository in an S3 bucket: ``s3://bucket/prefix``, any S3-compatible store.

Read-write, through boto3 (the standard AWS SDK): keys from the Engine's
CredentialChain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, else the credentials
file's entry for the bucket: ``access_key_id``, ``secret_access_key``), else
boto3's usual sources (~/.aws); region and CA bundle from boto3's sources too
(AWS_DEFAULT_REGION, AWS_CA_BUNDLE), the endpoint from ``?endpoint=URL`` or
AWS_ENDPOINT_URL. One client for all threads (boto3 clients are thread-safe;
its pool holds a connection per thread). A PUT is atomic and durable when it
returns, so there is no tmp/ and nothing to sync. Throttling, 5xx and
connection errors are retried under the stores' one RetryPolicy (boto3's own
retries are off): an endpoint that never answered fails in seconds, a lost
one is retried with notices to the running operation until the deadline.

Object Lock: with ``?object-lock=DAYS`` (``&object-lock-mode=governance``;
default compliance), or ``object_lock_days``/``object_lock_mode`` in the
bucket's credentials entry, chunks, manifests and signatures are written
with a retention date DAYS ahead, and a chunk a new image reuses has its
date moved forward when less than half of it is left; the bucket must have
been created with Object Lock. ``locked_until`` tells prune what it must
leave alone (docs/FORMAT.md, "Append-only storage").
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import boto3
import botocore.exceptions
from botocore.config import Config

from rescue_app.engine.keychain import CredentialChain, SecretKind, SecretRequest
from rescue_app.engine.stores import ByteStream, ReadStream, Store, split_url
from rescue_app.engine.stores.retry import RetryPolicy, network_reason
from rescue_app.errors import RepositoryError

log = logging.getLogger("liferaft.stores.s3")

_MISSING_KEY = {"404", "NoSuchKey", "NotFound"}
# Answers worth another try (boto3's own list for its standard mode, in short).
_TRANSIENT = {
    "500",
    "502",
    "503",
    "504",
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeoutException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "BadDigest",
}
T = TypeVar("T")
_AUTH = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "403",
    "InvalidToken",
    "ExpiredToken",
}
LOCK_MODES = ("compliance", "governance")
DEFAULT_LOCK_MODE = "compliance"  # not even the account's root can shorten or lift it
LOCKED_PREFIXES = ("chunks/", "images/")  # what images are made of (not index.json, prune/)


class S3Store(Store):
    def __init__(self, url: str, credentials: CredentialChain) -> None:
        self.credentials = credentials
        parts, _bucket = split_url(url, "bucket", "s3://BUCKET/PREFIX?endpoint=URL")
        if parts.username or parts.password:
            raise RepositoryError(
                "an s3:// URL holds no credentials",
                hint="put them in the credentials file (/etc/liferaft/credentials.yaml) or "
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            )
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        query = parse_qs(parts.query)
        self.endpoint = (query.get("endpoint") or [os.environ.get("AWS_ENDPOINT_URL", "")])[0]
        if self.endpoint:
            _check_endpoint(self.endpoint)
        region = (
            query.get("region")
            or [os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"]
        )[0]
        where = f" at {self.endpoint}" if self.endpoint else ""
        self.location = f"s3://{self.bucket}/{self.prefix}".rstrip("/") + where
        config = Config(
            retries={"total_max_attempts": 1},  # ours: _call
            connect_timeout=10,
            read_timeout=60,
            max_pool_connections=16,
            # S3-compatible servers rarely have a DNS name per bucket.
            s3={"addressing_style": "path" if self.endpoint else "auto"},
        )
        self._keys: Any = None  # the credentials entry found for this bucket, if any
        self.client: Any = self._session(url).client(
            "s3", endpoint_url=self.endpoint or None, region_name=region, config=config
        )
        self.policy = RetryPolicy.from_environment()
        self._answered = False  # has the endpoint ever answered? (first contact fails fast)
        # Object Lock retention for new objects: (days, mode) or None
        self.lock = _lock_setting(query, self._keys, self.location)
        self._bucket_locks: bool | None = None  # does the bucket have Object Lock on?
        self._lock_guard = threading.Lock()

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """``fn`` (one request, idempotent) until it succeeds, fails for good,
        or the policy gives up; its own errors pass through to the caller."""
        tries = self.policy.attempts(self.watch, what, answered=self._answered)
        while True:
            try:
                return tries.succeeded(fn())
            except botocore.exceptions.ClientError as exc:
                tries.answered = True  # it answered, if unwell
                code = str(exc.response.get("Error", {}).get("Code", ""))
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                if code not in _TRANSIENT and not (isinstance(status, int) and status >= 500):
                    raise
                reason = f"{code} {exc.response.get('Error', {}).get('Message', '')}".strip()
            except botocore.exceptions.SSLError:
                raise
            except (
                botocore.exceptions.ConnectionError,
                botocore.exceptions.HTTPClientError,
                botocore.exceptions.IncompleteReadError,
            ) as exc:
                # botocore keeps the socket's own error ("Connection refused") aside
                reason = network_reason(exc.kwargs.get("error") or exc)
            finally:
                self._answered = tries.answered  # the next request's first contact is over
            if not tries.wait(reason):
                raise tries.gave_up(
                    self.location,
                    "the S3 endpoint",
                    reason,
                    "the endpoint URL (?endpoint= or AWS_ENDPOINT_URL)",
                )

    def _request(self, what: str, fn: Callable[[], T], *, missing: str | None = None) -> T:
        """``_call`` with its failures as RepositoryError; with ``missing``
        (what was asked for), a key that does not exist is FileNotFoundError."""
        try:
            return self._call(what, fn)
        except botocore.exceptions.ClientError as exc:
            if (
                missing is not None
                and str(exc.response.get("Error", {}).get("Code")) in _MISSING_KEY
            ):
                raise FileNotFoundError(missing) from None
            raise self._error(what, exc) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise self._error(what, exc) from None

    def _session(self, url: str) -> boto3.session.Session:
        """The chain's keys (AWS_ACCESS_KEY_ID in the environment wins, as in
        every AWS tool; else the credentials file's entry for this bucket);
        else boto3's own sources (~/.aws)."""
        bare = url.split("?", 1)[0]
        keys = self.credentials.lookup(SecretRequest(SecretKind.S3_KEYS, url=bare), ask=False)
        self._keys = keys
        if keys is None:
            return boto3.session.Session()
        if not keys.access_key_id:
            raise RepositoryError(
                f"credentials for {keys.match}: secret_access_key without access_key_id",
                hint="add access_key_id to the entry",
            )
        log.debug("S3 keys for %s from %s", self.location, keys.match)
        return boto3.session.Session(
            aws_access_key_id=keys.access_key_id,
            aws_secret_access_key=keys.secret_access_key,
            aws_session_token=keys.session_token,
        )

    def _key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _error(self, what: str, exc: Exception) -> RepositoryError:
        if isinstance(exc, botocore.exceptions.ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code == "NoSuchBucket":
                return self._no_bucket()
            if code in _AUTH:
                return RepositoryError(
                    f"repository {self.location}: access denied ({code}): {what}",
                    hint="check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the bucket's "
                    "permissions",
                )
            return RepositoryError(
                f"repository {self.location}: {what} failed: {code} "
                f"{exc.response.get('Error', {}).get('Message', '')}".strip()
            )
        if isinstance(exc, botocore.exceptions.NoCredentialsError):
            return RepositoryError(
                f"repository {self.location}: no S3 credentials",
                hint="add access_key_id and secret_access_key for this bucket to the "
                "credentials file, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            )
        if isinstance(exc, botocore.exceptions.SSLError):
            return RepositoryError(
                f"repository {self.location}: TLS failure talking to the S3 endpoint",
                hint="give the endpoint's CA with AWS_CA_BUNDLE=ca.pem, or check the URL",
            )
        if isinstance(
            exc,
            botocore.exceptions.EndpointConnectionError
            | botocore.exceptions.ConnectTimeoutError
            | botocore.exceptions.ReadTimeoutError,
        ):
            return RepositoryError(
                f"repository {self.location}: cannot reach the S3 endpoint: {what} failed",
                hint="check the endpoint URL (?endpoint= or AWS_ENDPOINT_URL) and the network",
            )
        return RepositoryError(f"repository {self.location}: {what} failed: {exc}")

    def _no_bucket(self) -> RepositoryError:
        return RepositoryError(
            f"repository {self.location}: bucket {self.bucket!r} does not exist",
            hint="check the bucket name and the endpoint, or create the bucket first",
        )

    def read(self, rel: str) -> bytes:
        body: bytes = self._request(
            f"reading {rel}",
            lambda: self.client.get_object(Bucket=self.bucket, Key=self._key(rel))["Body"].read(),
            missing=rel,
        )
        return body

    def open_read(self, rel: str) -> ByteStream:
        body = self._request(
            f"reading {rel}",
            lambda: self.client.get_object(Bucket=self.bucket, Key=self._key(rel))["Body"],
            missing=rel,
        )
        return ReadStream(body, self.location, rel)

    def _head(self, rel: str) -> dict[str, Any] | None:
        """The object's metadata, None if it is not there."""
        try:
            head: dict[str, Any] = self._request(
                f"looking up {rel}",
                lambda: self.client.head_object(Bucket=self.bucket, Key=self._key(rel)),
                missing=rel,
            )
        except FileNotFoundError:
            return None
        return head

    def has(self, rel: str) -> bool:
        head = self._head(rel)
        if head is None:
            return False
        present = int(head.get("ContentLength", 0)) > 0
        if present and self.lock is not None and rel.startswith("chunks/"):
            self._keep_locked(rel, head.get("ObjectLockRetainUntilDate"))
        return present

    def _pages(self, rel: str) -> tuple[str, list[dict[str, Any]]]:
        """The key prefix of folder ``rel`` and every page of its listing."""
        prefix = self._key(rel).rstrip("/") + "/"
        # the whole listing is one try: a page cut off starts it over
        pages = self._request(
            f"listing {rel}",
            lambda: list(
                self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=prefix, Delimiter="/"
                )
            ),
        )
        return prefix, pages

    def list(self, rel: str) -> list[str]:
        prefix, pages = self._pages(rel)
        names: set[str] = set()
        for page in pages:
            for p in page.get("CommonPrefixes", []):
                names.add(p["Prefix"][len(prefix) :].rstrip("/"))
            for o in page.get("Contents", []):
                names.add(o["Key"][len(prefix) :])
        return sorted(n for n in names if n)

    def write(self, rel: str, data: bytes, *, durable: bool) -> None:
        extra = self._retention_args(rel)
        self._request(
            f"writing {rel}",
            lambda: self.client.put_object(
                Bucket=self.bucket, Key=self._key(rel), Body=data, **extra
            ),
        )

    def delete(self, rel: str) -> None:
        # S3 deletes are idempotent: a missing key is no error.
        self._request(
            f"deleting {rel}",
            lambda: self.client.delete_object(Bucket=self.bucket, Key=self._key(rel)),
        )

    def rename(self, rel: str, new_rel: str) -> None:
        # S3 has no rename: a server-side copy, then the delete. Between the
        # two both keys hold the same bytes, which either name may hold.
        self._request(
            f"copying {rel}",
            lambda: self.client.copy_object(
                Bucket=self.bucket,
                Key=self._key(new_rel),
                CopySource={"Bucket": self.bucket, "Key": self._key(rel)},
            ),
            missing=rel,
        )
        self.delete(rel)

    def sizes(self, rel: str) -> dict[str, int]:
        prefix, pages = self._pages(rel)
        return {
            o["Key"][len(prefix) :]: int(o.get("Size", 0))
            for page in pages
            for o in page.get("Contents", [])
            if o["Key"] != prefix
        }

    def sync(self) -> None:
        return None  # a PUT is on stable storage when it returns

    # -- Object Lock ---------------------------------------------------------
    def _retention_args(self, rel: str) -> dict[str, Any]:
        if self.lock is None or not rel.startswith(LOCKED_PREFIXES):
            return {}
        if rel.endswith(".candidate"):
            return {}
        days, mode = self.lock
        return {
            "ObjectLockMode": mode.upper(),
            "ObjectLockRetainUntilDate": datetime.now(UTC) + timedelta(days=days),
        }

    def _keep_locked(self, rel: str, until: datetime | None) -> None:
        """A chunk a new image reuses stays locked as long as a new one: its
        date moves forward when less than half the period is left."""
        assert self.lock is not None
        days, mode = self.lock
        if until is not None and until - datetime.now(UTC) > timedelta(days=days / 2):
            return
        retention = {
            "Mode": mode.upper(),
            "RetainUntilDate": datetime.now(UTC) + timedelta(days=days),
        }
        self._request(
            f"extending the Object Lock of {rel}",
            lambda: self.client.put_object_retention(
                Bucket=self.bucket, Key=self._key(rel), Retention=retention
            ),
        )

    def has_object_lock(self) -> bool:
        """Whether the bucket has Object Lock enabled (asked once)."""
        what = "reading the bucket's Object Lock setting"
        with self._lock_guard:
            if self._bucket_locks is None:
                try:
                    conf = self._call(
                        what, lambda: self.client.get_object_lock_configuration(Bucket=self.bucket)
                    )
                    enabled = conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
                    self._bucket_locks = enabled == "Enabled"
                except botocore.exceptions.ClientError as exc:
                    code = str(exc.response.get("Error", {}).get("Code", ""))
                    if code != "ObjectLockConfigurationNotFoundError":
                        raise self._error(what, exc) from None
                    self._bucket_locks = False
                except botocore.exceptions.BotoCoreError as exc:
                    raise self._error(what, exc) from None
            return self._bucket_locks

    def locked_until(self, rel: str) -> datetime | None:
        head = self._head(rel) if self.has_object_lock() else None
        until = head.get("ObjectLockRetainUntilDate") if head else None
        if isinstance(until, datetime) and until > datetime.now(UTC):
            return until
        return None

    def _check_bucket(self) -> None:
        try:
            self._request(
                "opening the bucket",
                lambda: self.client.head_bucket(Bucket=self.bucket),
                missing=self.bucket,
            )
        except FileNotFoundError:  # (NoSuchBucket: _error says the same)
            raise self._no_bucket() from None

    def check_writable(self) -> None:
        self._check_bucket()
        if self.lock is not None and not self.has_object_lock():
            raise RepositoryError(
                f"repository {self.location}: Object Lock was asked for, but bucket "
                f"{self.bucket!r} does not have it enabled",
                hint="create the bucket with Object Lock (ObjectLockEnabledForBucket; it "
                "cannot be switched on later on most servers), or leave out object-lock",
            )
        probe = f"tmp/.probe-{uuid.uuid4().hex}"
        self.write(probe, b"x", durable=False)
        self._request(
            "deleting a test object",
            lambda: self.client.delete_object(Bucket=self.bucket, Key=self._key(probe)),
        )

    def missing(self, create_hint: bool) -> RepositoryError:
        try:
            self._check_bucket()
        except RepositoryError as exc:
            return exc
        return RepositoryError(
            f"no liferaft repository at {self.location} (no liferaft-repository.json)",
            hint="check the bucket and prefix: they must hold liferaft-repository.json",
        )

    def prepare_new(self) -> None:
        self._check_bucket()
        page = self._request(
            "listing the prefix",
            lambda: self.client.list_objects_v2(
                Bucket=self.bucket, Prefix=self.prefix + "/" if self.prefix else "", MaxKeys=1
            ),
        )
        if page.get("KeyCount", 0):
            raise RepositoryError(
                f"{self.location} is not empty and not a liferaft repository",
                hint="choose an empty or new prefix for a new repository",
            )

    def close(self) -> None:
        self.client.close()


def _lock_setting(query: dict[str, list[str]], keys: Any, location: str) -> tuple[int, str] | None:
    """(days, mode) of Object Lock for new objects: the URL's
    ``object-lock=DAYS`` and ``object-lock-mode``, else the credentials
    entry's ``object_lock_days`` and ``object_lock_mode``; None: no lock."""
    days_text = (query.get("object-lock") or [""])[0]
    mode = (query.get("object-lock-mode") or [""])[0].lower()
    if not days_text and getattr(keys, "object_lock_days", None):
        days_text = str(keys.object_lock_days)
        mode = mode or str(getattr(keys, "object_lock_mode", None) or "").lower()
    if not days_text:
        if mode:
            raise RepositoryError(
                f"repository {location}: object-lock-mode without object-lock=DAYS",
                hint="give the retention in days too: ?object-lock=30&object-lock-mode=" + mode,
            )
        return None
    if not days_text.isdigit() or not 1 <= int(days_text) <= 36500:
        raise RepositoryError(
            f"repository {location}: object-lock={days_text!r} is not a number of days",
            hint="give the retention as whole days, 1 to 36500: ?object-lock=30",
        )
    mode = mode or DEFAULT_LOCK_MODE
    if mode not in LOCK_MODES:
        raise RepositoryError(
            f"repository {location}: Object Lock mode {mode!r} is not known",
            hint="use compliance (the default) or governance",
        )
    return int(days_text), mode


def _check_endpoint(endpoint: str) -> None:
    """boto3 raises a bare ValueError (or fails at the first request) for an
    endpoint that is not an http(s) URL with a host: say so up front."""
    try:
        parts = urlsplit(endpoint)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise RepositoryError(
            f"S3 endpoint {endpoint!r} is not a URL",
            hint="write it as ?endpoint=https://HOST[:PORT] (or http:// for a server "
            "without TLS), or set AWS_ENDPOINT_URL",
        )
