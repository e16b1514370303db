"""nginx (tests/stores/serverkit.py) serving a folder behind HTTP basic auth."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator

from tests.stores.serverkit import Nginx


@contextlib.contextmanager
def nginx_with_basic_auth(root: str, directory: str, user: str, password: str) -> Iterator[Nginx]:
    """Started nginx on 127.0.0.1 (the guest of QEMU's user network sees it at
    10.0.2.2) letting only ``user`` with ``password`` read ``root``."""
    hashed = subprocess.run(
        ["openssl", "passwd", "-apr1", "-stdin"],
        input=password,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    os.makedirs(directory, exist_ok=True)
    users = os.path.join(directory, "htpasswd")
    with open(users, "w") as f:
        f.write(f"{user}:{hashed}\n")
    server = Nginx(root, os.path.join(directory, "nginx"))
    with open(server.conf) as f:
        conf = f.read()
    root_line = f"root {root};"
    assert root_line in conf, conf
    conf = conf.replace(
        root_line, f'{root_line} auth_basic "liferaft"; auth_basic_user_file {users};'
    )
    with open(server.conf, "w") as f:
        f.write(conf)
    with server:
        yield server
