"""Profile parsing: schema errors name file, key and line; extends merges. No root."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from builder.profile import PROFILE_DIR, list_profiles, load_profile
from rescue_app.profile import Profile, ProfileError, merge


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(text)
    return path


BASE = """\
name: base
label: BASE
title: Base rescue
suite: bookworm
mirror: http://deb.debian.org/debian
packages: [less]
network:
  mode: dhcp
ssh:
  enabled: false
"""


def test_shipped_profiles_load() -> None:
    assert {"default", "example-site"} <= set(list_profiles())
    default = load_profile("default")
    assert isinstance(default, Profile)
    assert default.suite == "bookworm"
    site = load_profile("example-site")
    assert site.name == "example-site"
    assert site.suite == default.suite  # inherited
    assert site.network.mode == "static"
    assert site.ssh.enabled and site.ssh.authorized_keys
    assert site.source == str(PROFILE_DIR / "example-site.yaml")


def test_profile_is_frozen() -> None:
    profile = load_profile("default")
    with pytest.raises(AttributeError):
        profile.name = "other"  # type: ignore[misc]


def test_unknown_key_names_file_key_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "bad", BASE + "colour: blue\n")
    with pytest.raises(ProfileError) as err:
        load_profile("bad", tmp_path)
    msg = str(err.value)
    assert str(path) in msg and "'colour'" in msg and f"{path}:11:" in msg


def test_unknown_nested_key(tmp_path: Path) -> None:
    write(tmp_path, "bad", BASE.replace("  mode: dhcp\n", "  mode: dhcp\n  vlan: 5\n"))
    with pytest.raises(ProfileError, match=r"bad\.yaml:9: unknown key 'network\.vlan'"):
        load_profile("bad", tmp_path)


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("packages: less", "packages"),
        ("compression:\n  level: high", "compression.level"),
        ("ssh:\n  enabled: 1", "ssh.enabled"),
        ("network:\n  mode: wifi", "network.mode"),
        ("title: [a, b]", "title"),
        ("repository: 5", "repository"),
    ],
)
def test_wrong_type_names_file_key_and_line(tmp_path: Path, line: str, key: str) -> None:
    text = "extends: base\n# comment\n" + line + "\n"
    write(tmp_path, "base", BASE)
    path = write(tmp_path, "child", text)
    with pytest.raises(ProfileError) as err:
        load_profile("child", tmp_path)
    msg = str(err.value)
    expected_line = 3 if "\n" not in line else 4
    assert f"{path}:{expected_line}: key '{key}'" in msg, msg


def test_extends_merges_mappings_and_replaces_lists(tmp_path: Path) -> None:
    write(tmp_path, "base", BASE)
    write(
        tmp_path,
        "site",
        "extends: base\nname: site\npackages: [nfs-common]\nssh:\n  authorized_keys: [k1]\n",
    )
    site = load_profile("site", tmp_path)
    assert site.packages == ("nfs-common",)
    assert site.ssh.enabled is False  # kept from base
    assert site.ssh.authorized_keys == ("k1",)
    assert site.title == "Base rescue"


def test_extends_loop_and_missing_parent(tmp_path: Path) -> None:
    write(tmp_path, "a", "extends: b\n")
    write(tmp_path, "b", "extends: a\n")
    with pytest.raises(ProfileError, match="loops"):
        load_profile("a", tmp_path)
    write(tmp_path, "c", "extends: nowhere\n")
    with pytest.raises(ProfileError, match="nowhere"):
        load_profile("c", tmp_path)


def test_missing_required_field(tmp_path: Path) -> None:
    write(tmp_path, "thin", "name: thin\n")
    with pytest.raises(ProfileError, match="thin.yaml"):
        load_profile("thin", tmp_path)


def test_static_network_needs_address(tmp_path: Path) -> None:
    write(tmp_path, "s", BASE.replace("mode: dhcp", "mode: static"))
    with pytest.raises(ProfileError, match="network.address"):
        load_profile("s", tmp_path)


def test_merge_is_pure() -> None:
    base = {"a": {"b": 1, "c": 2}, "l": [1]}
    over = {"a": {"c": 3}, "l": [2]}
    assert merge(base, over) == {"a": {"b": 1, "c": 3}, "l": [2]}
    assert base == {"a": {"b": 1, "c": 2}, "l": [1]}


def test_show_and_profiles_commands(capsys: pytest.CaptureFixture[str]) -> None:
    from builder.cli import main

    assert main(["profiles"]) == 0
    out = capsys.readouterr().out
    assert "default" in out and "example-site" in out
    assert main(["show", "--profile", "example-site"]) == 0
    out = capsys.readouterr().out
    assert "name: example-site" in out and "suite: bookworm" in out
    assert main(["show", "--profile", "nope"]) == 1
    assert "no profile 'nope'" in capsys.readouterr().err


# -- credentials ------------------------------------------------------------

PW_SECRET = "nas-Pw-9f3-from-a-file"
LITERAL_SECRET = "literal-Pw-Zz1-in-yaml"


def _site_with_credentials(tmp_path: Path) -> Path:
    """A profile that extends BASE with secrets in files next to it and one literal."""
    tmp_path.mkdir(exist_ok=True)
    write(tmp_path, "base", BASE)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "nas.pw").write_text(PW_SECRET + "\n")
    import subprocess

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "",
                    "-f", str(secrets / "backup_key")], check=True)  # fmt: skip
    write(
        tmp_path,
        "site",
        f"""\
extends: base
name: site
network:
  mode: none
credentials:
  - match: backup@nas.example.com
    password_file: secrets/nas.pw
  - match: sftp://backup@files.example.com/srv
    ssh_key_file: secrets/backup_key
    host_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleKeyOnlyForTheExampleProfile0000000"]
  - match: https://images.example.com/
    user: rescue
    password: "{LITERAL_SECRET}"
""",
    )
    return tmp_path


def test_credentials_section_paths_are_relative_to_the_profile(tmp_path: Path) -> None:
    profiles = _site_with_credentials(tmp_path)
    profile = load_profile("site", profiles)
    nas, sftp, web = profile.credentials
    assert nas.password_file == str(profiles / "secrets" / "nas.pw")
    assert sftp.ssh_key_file == str(profiles / "secrets" / "backup_key")
    assert web.user == "rescue" and nas.origin == f"{profiles / 'site.yaml'}:6"
    assert profile.network.mode == "none"


def test_missing_secret_file_names_profile_key_and_path(tmp_path: Path) -> None:
    profiles = _site_with_credentials(tmp_path)
    (profiles / "secrets" / "nas.pw").unlink()
    with pytest.raises(ProfileError) as err:
        load_profile("site", profiles)
    text = str(err.value)
    assert f"{profiles / 'site.yaml'}:6" in text
    assert "credentials.password_file" in text
    assert f"{profiles / 'secrets' / 'nas.pw'} does not exist" in text


@pytest.mark.parametrize("entry, needle", [
    ("  - password: x\n", "'credentials.match' is required"),
    ("  - match: h\n    user: u\n", "no secret"),
    ("  - match: h\n    password: a\n    password_file: f\n", "not both"),
    ("  - match: h\n    pasword: a\n", "unknown key 'credentials.pasword'"),
])  # fmt: skip
def test_bad_credentials_entries(tmp_path: Path, entry: str, needle: str) -> None:
    (tmp_path / "f").write_text("x")
    write(tmp_path, "bad", BASE + "credentials:\n" + entry)
    with pytest.raises(ProfileError, match=re.escape(needle)):
        load_profile("bad", tmp_path)


def test_show_masks_literal_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from builder.cli import main

    profiles = _site_with_credentials(tmp_path)
    assert main(["--profiles-dir", str(profiles), "show", "--profile", "site"]) == 0
    out = capsys.readouterr().out
    assert "match: backup@nas.example.com" in out and "password: <hidden>" in out
    assert LITERAL_SECRET not in out and PW_SECRET not in out and "PRIVATE KEY" not in out


def test_image_gets_credentials_0600_and_nothing_else_holds_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The build's overlay steps on a profile with secrets: the baked file is
    0600 and holds them, profile.yaml, the build's output and the cache key
    do not; network.mode none leaves no .network file and no networkd."""
    import stat

    import yaml

    from builder import context, layers
    from rescue_app.engine import credentials

    profiles = _site_with_credentials(tmp_path / "profiles")
    profile = load_profile("site", profiles)
    ctx = context.BuildContext(
        profile=profile,
        repo=context.REPO,
        cache_dir=tmp_path / "cache",
        build_dir=tmp_path / "build",
        output_dir=tmp_path / "dist",
    )
    root = tmp_path / "root"
    root.mkdir()
    layers.render_overlay(ctx, root)
    layers.configure_system(ctx, root)
    layers.bake_credentials(ctx, root)

    baked = root / "etc/liferaft/credentials.yaml"
    st = baked.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and stat.S_ISREG(st.st_mode)
    loaded = credentials.load(str(baked))  # the engine accepts it as it is
    nas = loaded.find(who="backup@nas.example.com")
    assert nas is not None and nas.password == PW_SECRET
    sftp = loaded.find("sftp://backup@files.example.com/srv/images")
    key_file = profiles / "secrets" / "backup_key"
    assert sftp is not None and sftp.ssh_key == key_file.read_text()
    assert sftp.private_key().get_base64() in (profiles / "secrets/backup_key.pub").read_text()
    web = loaded.find("https://images.example.com/repo")
    assert web is not None and (web.user, web.password) == ("rescue", LITERAL_SECRET)

    shown = (root / "etc/liferaft/profile.yaml").read_text()
    assert yaml.safe_load(shown)["credentials"][2]["password"] == "<hidden>"
    logged = capsys.readouterr()
    for secret in (PW_SECRET, LITERAL_SECRET, "PRIVATE KEY"):
        assert secret not in shown
        assert secret not in logged.out + logged.err
        assert secret not in profile.digest_data()
    holders = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()
               and PW_SECRET.encode() in p.read_bytes()]  # fmt: skip
    assert holders == [baked]

    assert not (root / "etc/systemd/network/20-wired.network").exists()
    wants = {p.name for p in (root / "etc/systemd/system/multi-user.target.wants").iterdir()}
    assert "systemd-networkd.service" not in wants

    # the images that carry the file (app layer, ISO) are root's alone
    image = tmp_path / "dist" / "site.iso"
    image.parent.mkdir()
    image.write_bytes(b"image")
    image.chmod(0o644)
    layers.private_if_secrets(ctx, image)
    assert stat.S_IMODE(image.stat().st_mode) == 0o600

    # a changed secret file changes the cache key: the image is rebuilt
    before = profile.digest_data()
    (profiles / "secrets" / "nas.pw").write_text("another password\n")
    assert load_profile("site", profiles).digest_data() != before


def test_profile_without_credentials_bakes_nothing(tmp_path: Path) -> None:
    from builder import context, layers

    ctx = context.BuildContext(
        profile=load_profile("default"),
        repo=context.REPO,
        cache_dir=tmp_path,
        build_dir=tmp_path,
        output_dir=tmp_path,
    )
    root = tmp_path / "root"
    root.mkdir()
    layers.render_overlay(ctx, root)
    layers.bake_credentials(ctx, root)
    assert not (root / "etc/liferaft/credentials.yaml").exists()
    image = tmp_path / "default.iso"
    image.write_bytes(b"image")
    image.chmod(0o644)
    layers.private_if_secrets(ctx, image)
    assert stat.S_IMODE(image.stat().st_mode) == 0o644
    assert "DHCP=yes" in (root / "etc/systemd/network/20-wired.network").read_text()


def test_the_rescue_system_reads_the_dumped_profile_with_the_same_schema(tmp_path: Path) -> None:
    """/etc/liferaft/profile.yaml is Profile.dump(); the UI and unattended mode load it
    with the builder's loader (secret files stayed on the build host)."""
    from rescue_app.profile import load_profile_file

    secret = tmp_path / "nas.pw"
    secret.write_text("pw\n")
    write(
        tmp_path,
        "base",
        BASE + "repository: /srv/images\nunattended:\n  action: restore\n"
        "credentials:\n  - match: backup@nas\n    password_file: nas.pw\n",
    )
    built = load_profile("base", tmp_path)
    secret.unlink()
    installed = tmp_path / "etc" / "profile.yaml"
    installed.parent.mkdir()
    installed.write_text(built.dump())
    loaded = load_profile_file(installed, check_secrets=False)
    assert (loaded.title, loaded.repository, loaded.unattended) == (
        built.title,
        built.repository,
        built.unattended,
    )
    assert loaded.unattended.poweroff is True
