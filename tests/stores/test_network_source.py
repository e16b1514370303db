"""The UI's NetworkSource: a typed URL and password open a repository and
list its images; the password stays out of the label."""

from __future__ import annotations

import threading

import pytest

from rescue_app.engine import Engine
from rescue_app.engine.keychain import SecretKind, SecretRequest, SessionSecrets
from rescue_app.engine.stores.httpserve import make_server
from rescue_app.errors import RepositoryError
from rescue_app.tui.sources import NetworkSource, PathSource, source_for_typed


@pytest.mark.root
def test_network_source_lists_images_over_http(captured, monkeypatch):
    monkeypatch.delenv("LIFERAFT_PASSWORD", raising=False)
    server = make_server(captured.repo, "127.0.0.1", 0)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://reader@127.0.0.1:{server.server_address[1]}/"
        source = source_for_typed(url, password="typed-secret")
        assert isinstance(source, NetworkSource)
        assert "typed-secret" not in source.label + source.detail
        engine = Engine()
        repo = source.open(engine)
        assert [i.name for i in engine.list_images(repo)] == ["src"]
        # the typed password is this engine's, kept with its session's secrets
        typed = next(s for s in engine.credentials.sources if isinstance(s, SessionSecrets))
        found = typed.lookup(SecretRequest(SecretKind.PASSWORD, who="reader@127.0.0.1"))
        assert found is not None and found.password == "typed-secret"
        assert Engine().credentials.password("reader@127.0.0.1", ask=False) is None
        source.close()
        source.close()
    finally:
        server.shutdown()
        server.server_close()


def test_typed_text():
    assert isinstance(source_for_typed("/mnt/usb/repo"), PathSource)
    assert isinstance(source_for_typed("file:///mnt/x"), PathSource)
    assert source_for_typed("sftp://ann@h/srv").label == "sftp://ann@h/srv"
    with pytest.raises(RepositoryError, match="holds a password"):
        NetworkSource("sftp://ann:pw@h/srv")
    with pytest.raises(RepositoryError, match="not a repository URL"):
        NetworkSource("gopher://h/x")
