"""``musetalk serve`` refuses a bad latency budget or session limit in one line, before loading anything."""
from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("flags, message", [
    (["--max-sessions", "0"], "--max-sessions must be at least 1, got 0"),
    (["--latency-budget-ms=-5"], "--latency-budget-ms must be positive, got -5"),
    (["--max-audio-ahead-s", "0"], "--max-audio-ahead-s must be positive, got 0"),
])
def test_bad_serve_flags(tmp_path, flags, message):
    run = subprocess.run([sys.executable, "-m", "musetalk.cli.main", "serve", "--models", str(tmp_path), *flags],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and message in run.stderr and "Traceback" not in run.stderr
