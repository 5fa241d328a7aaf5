"""Any exception a sub-command raises ends in one line on stderr (what failed, how to see more); -v re-raises."""
from __future__ import annotations

import pytest

from musetalk.cli import download as download_cli
from musetalk.cli.main import main


def _crash(args):
    raise RuntimeError("sd-vae is broken\nsecond line")


def test_unexpected_exception_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(download_cli, "run", _crash)
    assert main(["download", "--models", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == ("musetalk: error: download failed unexpectedly: RuntimeError: sd-vae is broken (run with -v for the "
                   "traceback)\n")


def test_verbose_shows_the_traceback(monkeypatch, tmp_path):
    monkeypatch.setattr(download_cli, "run", _crash)
    with pytest.raises(RuntimeError, match="sd-vae is broken"):
        main(["-v", "download", "--models", str(tmp_path)])
