"""``musetalk serve`` access options: the token from the flag, the environment, or generated off loopback."""
from __future__ import annotations

import logging

from musetalk.cli.serve import access_token


def test_token_sources(monkeypatch, caplog):
    monkeypatch.delenv("MUSETALK_TOKEN", raising=False)
    assert access_token(None, "127.0.0.1", 8000) is None
    assert access_token("given", "0.0.0.0", 8000) == "given"
    monkeypatch.setenv("MUSETALK_TOKEN", "from-env")
    assert access_token(None, "0.0.0.0", 8000) == "from-env"
    assert access_token("given", "127.0.0.1", 8000) == "given"
    assert caplog.records == []


def test_token_generated_and_its_url_logged_off_loopback(monkeypatch, caplog):
    monkeypatch.delenv("MUSETALK_TOKEN", raising=False)
    with caplog.at_level(logging.WARNING, logger="musetalk.cli.serve"):
        token = access_token(None, "0.0.0.0", 8123)
        other = access_token(None, "192.168.1.5", 8000)
    assert len(token) == 22 and token != other
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.WARNING]
    assert caplog.records[0].getMessage() == (
        f"listening on 0.0.0.0 without --token: generated one; open the page at http://0.0.0.0:8123/?token={token}")
