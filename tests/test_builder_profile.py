"""Profile parsing: schema errors name file, key and line; extends merges. No root."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.profile import (
    PROFILE_DIR,
    Profile,
    ProfileError,
    list_profiles,
    load_profile,
    merge,
)


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
