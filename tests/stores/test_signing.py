"""Signed images (engine/signing.py): capture --sign-key, restore/verify --trust-key,
and a rescue stick's profile that bakes the trusted key in."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rescue_app import unattended
from rescue_app.engine.kernel import reread_partitions
from rescue_app.profile import ProfileError, load_profile_file
from rescue_app.unattended import run_unattended
from tests.enginekit import assert_one_line_error, check_restored, liferaft
from tests.stores.conftest import DISK_BYTES, Captured


@dataclass
class Keys:
    key: str  # PEM private key (openssl)
    pub: str  # PEM public key
    other_pub: str  # a key nobody signed with
    ssh_key: str  # OpenSSH private key (ssh-keygen)
    ssh_pub: str


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    d = tmp_path_factory.mktemp("keys")
    for name in ("site", "other"):
        _openssl("genpkey", "-algorithm", "ed25519", "-out", str(d / f"{name}.key"))
        _openssl("pkey", "-in", str(d / f"{name}.key"), "-pubout", "-out", str(d / f"{name}.pub"))
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "ssh_site")],
        check=True,
        capture_output=True,
    )
    return Keys(
        str(d / "site.key"),
        str(d / "site.pub"),
        str(d / "other.pub"),
        str(d / "ssh_site"),
        str(d / "ssh_site.pub"),
    )


@dataclass
class Signed:
    repo: str
    image_id: str


@pytest.fixture(scope="module")
def signed(captured: Captured, keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Signed:
    """A repository with image "web" signed by site.key."""
    repo = str(tmp_path_factory.mktemp("signed") / "repo")
    out = liferaft(
        "capture", "--repo", repo, "--name", "web", "--sign-key", keys.key, captured.source.dev
    ).stdout
    image_id = out.split("captured web@", 1)[1].split(":", 1)[0]
    return Signed(repo, image_id)


def _disk_sum(dev: str) -> str:
    with open(dev, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture
def copy_of(signed: Signed, tmp_path: Path) -> Iterator[str]:
    """A copy of the signed repository a test may tamper with."""
    repo = str(tmp_path / "repo")
    shutil.copytree(signed.repo, repo)
    yield repo


@pytest.mark.root
def test_signed_image_verifies_and_restores_with_the_site_key(signed, keys, captured, loopdisk):
    sig = json.loads(Path(signed.repo, f"images/web/{signed.image_id}.json.sig").read_text())
    assert sig["scheme"] == "ed25519" and sig["name"] == "web" and sig["id"] == signed.image_id
    assert ": OK" in liferaft("verify", "--repo", signed.repo, "--trust-key", keys.pub).stdout
    target = loopdisk(DISK_BYTES)
    liferaft(
        "restore", "--repo", signed.repo, "--image", "web", "--to", target, "--yes",
        "--trust-key", keys.other_pub, "--trust-key", keys.pub,
    )  # fmt: skip
    check_restored(captured.source, reread_partitions(target, len(captured.source.nodes)))


@pytest.mark.root
def test_unsigned_and_wrong_key_images_are_refused_nothing_written(
    signed, keys, captured, loopdisk
):
    target = loopdisk(DISK_BYTES)
    before = _disk_sum(target)
    # an unsigned image (the stores' shared repository)
    proc = liferaft(
        "restore", "--repo", captured.repo, "--image", "src", "--to", target, "--yes",
        "--trust-key", keys.pub, check=False,
    )  # fmt: skip
    assert_one_line_error(proc, "is not signed")
    proc = liferaft("verify", "--repo", captured.repo, "src", "--trust-key", keys.pub, check=False)
    assert_one_line_error(proc, "is not signed")
    # signed, but by a key this restore does not trust
    proc = liferaft(
        "restore", "--repo", signed.repo, "--image", "web", "--to", target, "--yes",
        "--trust-key", keys.other_pub, check=False,
    )  # fmt: skip
    assert_one_line_error(proc, "which", "does not trust")
    assert _disk_sum(target) == before


@pytest.mark.root
def test_swapped_renamed_and_changed_manifests_are_refused(signed, keys, copy_of, loopdisk):
    repo = Path(copy_of)
    manifest = repo / f"images/web/{signed.image_id}.json"
    sig = manifest.with_name(manifest.name + ".sig")
    target = loopdisk(DISK_BYTES)
    before = _disk_sum(target)

    def refused(image: str, *needles: str) -> None:
        proc = liferaft(
            "restore", "--repo", copy_of, "--image", image, "--to", target, "--yes",
            "--trust-key", keys.pub, check=False,
        )  # fmt: skip
        assert_one_line_error(proc, *needles)

    # presented as another machine's image
    (repo / "images/db").mkdir()
    shutil.copy(manifest, repo / f"images/db/{signed.image_id}.json")
    shutil.copy(sig, repo / f"images/db/{signed.image_id}.json.sig")
    refused("db", f"carries the signature of image web@{signed.image_id}")
    # presented as a newer image of the same machine
    newer = "29991231T235959Z"
    shutil.copy(manifest, repo / f"images/web/{newer}.json")
    shutil.copy(sig, repo / f"images/web/{newer}.json.sig")
    refused("web", f"web@{newer} carries the signature of image web@{signed.image_id}")
    for p in (repo / f"images/web/{newer}.json", repo / f"images/web/{newer}.json.sig"):
        p.unlink()
    # changed after signing (the target disk's serial, say)
    manifest.write_text(manifest.read_text().replace('"host": "', '"host": "x', 1))
    refused(f"web@{signed.image_id}", "does not match its manifest")
    assert _disk_sum(target) == before


@pytest.mark.root
def test_openssh_keys_sign_and_verify(captured, keys, tmp_path):
    repo = str(tmp_path / "repo")
    liferaft(
        "capture", "--repo", repo, "--name", "ssh", "--sign-key", keys.ssh_key, captured.source.dev
    )
    assert ": OK" in liferaft("verify", "--repo", repo, "--trust-key", keys.ssh_pub).stdout
    proc = liferaft("verify", "--repo", repo, "ssh", "--trust-key", keys.pub, check=False)
    assert_one_line_error(proc, "does not trust")


def test_bad_key_files_are_one_line(keys, tmp_path):
    not_a_key = tmp_path / "x.pub"
    not_a_key.write_text("hello\n")
    proc = liferaft("verify", "--repo", str(tmp_path), "--trust-key", str(not_a_key), check=False)
    assert_one_line_error(proc, "is not an Ed25519 public key")
    rsa = tmp_path / "rsa.key"
    _openssl("genpkey", "-algorithm", "rsa", "-pkeyopt", "rsa_keygen_bits:1024", "-out", str(rsa))
    proc = liferaft(
        "capture", "--repo", str(tmp_path / "r"), "--name", "x", "--sign-key", str(rsa),
        "/dev/null", check=False,
    )  # fmt: skip
    assert_one_line_error(proc, "is not an Ed25519 private key")
    assert not (tmp_path / "r").exists()


# -- a rescue stick's profile with the site's key baked in


def _profile(tmp_path: Path, keys_yaml: str) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(
        "label: LIFERAFT\ntitle: Site\nsuite: bookworm\nmirror: http://deb.example/debian\n"
        + keys_yaml
    )
    return path


def _baked(tmp_path: Path, pub: str) -> Path:
    pem = Path(pub).read_text()
    block = "".join(f"      {line}\n" for line in pem.splitlines())
    return _profile(tmp_path, f"signing:\n  trusted_keys:\n    - |\n{block}")


def test_profile_key_is_checked_when_the_profile_loads(keys, tmp_path):
    trusted = load_profile_file(_baked(tmp_path, keys.pub)).trusted_keys()
    assert trusted is not None and len(trusted.keys) == 1
    ssh_line = Path(keys.ssh_pub).read_text().strip()
    profile = load_profile_file(_profile(tmp_path, f"signing:\n  trusted_keys: ['{ssh_line}']\n"))
    assert profile.trusted_keys() is not None
    assert "signing" in profile.dump()
    with pytest.raises(ProfileError, match="signing.trusted_keys.*not an Ed25519 public key"):
        load_profile_file(_profile(tmp_path, "signing:\n  trusted_keys: ['ssh-rsa AAAA']\n"))


@pytest.mark.root
def test_stick_with_a_baked_key_restores_only_signed_images(
    signed, keys, captured, loopdisk, tmp_path, monkeypatch
):
    # what the build writes to the stick's /etc/liferaft/profile.yaml (render_overlay)
    profile = tmp_path / "installed-profile.yaml"
    profile.write_text(load_profile_file(_baked(tmp_path, keys.pub)).dump())
    monkeypatch.setattr(unattended, "PROFILE_FILE", profile)
    monkeypatch.setattr(unattended, "LOG_FILE", tmp_path / "u.log")
    target = loopdisk(DISK_BYTES)
    before = _disk_sum(target)

    def restore(repo: str, image: str) -> int:
        return run_unattended(
            f"liferaft.action=restore liferaft.repo={repo} liferaft.image={image} "
            f"liferaft.target={target} liferaft.poweroff=0",
            power_off=lambda: None,
        )

    assert restore(captured.repo, "src") != 0  # unsigned
    assert "is not signed" in (tmp_path / "u.log").read_text()
    assert _disk_sum(target) == before
    # the CLI on the stick (its profile found through LIFERAFT_PROFILE) refuses it too
    monkeypatch.setenv("LIFERAFT_PROFILE", str(profile))
    proc = liferaft("verify", "--repo", captured.repo, "src", check=False)
    assert_one_line_error(proc, "is not signed", str(profile))
    # its image list says why the image is not shown: not trusted, not "damaged"
    proc = liferaft("images", "--repo", captured.repo)
    assert "skipped an image that is not trusted" in proc.stderr and "is not signed" in proc.stderr
    assert "damaged" not in proc.stderr
    assert restore(signed.repo, "web") == 0
    check_restored(captured.source, reread_partitions(target, len(captured.source.nodes)))


def test_the_sticks_cli_and_ui_engine_requires_the_baked_keys(keys, tmp_path, monkeypatch):
    """`liferaft tui` (and every command) gets an Engine holding the profile's
    keys; --trust-key replaces them; no profile: nothing required."""
    from rescue_app import cli

    parser = cli.build_parser()
    monkeypatch.setenv("LIFERAFT_PROFILE", str(tmp_path / "none.yaml"))
    assert cli._engine(parser.parse_args(["tui"])).trusted is None
    monkeypatch.setenv("LIFERAFT_PROFILE", str(_baked(tmp_path, keys.pub)))
    trusted = cli._engine(parser.parse_args(["tui"])).trusted
    assert trusted is not None and "site.yaml" in trusted.origin
    args = parser.parse_args(["verify", "--repo", "r", "--trust-key", keys.other_pub])
    trusted = cli._engine(args).trusted
    assert trusted is not None and trusted.origin == keys.other_pub
