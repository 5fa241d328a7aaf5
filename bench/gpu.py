"""Every speed figure of a GPU machine in one run: the CUDA tests, then the benches with full-size random
models, each configuration failing soft; writes OUTDIR/gpu-report.md and OUTDIR/gpu-report.json.

Run through bench/gpu.sh (it installs the carried wheels first). ``--dry`` runs the same plan on CPU with
tiny models and one configuration per bench, so the script is known to work before a GPU is at hand.
Inputs come from bench/media (``make gpu-media``: clips, speech and face records made on a CPU machine).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT / "bench" / "media"
log = logging.getLogger("bench.gpu")


@dataclass
class Step:
    """One command of the plan; ``result`` is the JSON it wrote (when it writes one)."""

    name: str
    command: list[str]
    timeout_s: float
    json_out: Path | None = None
    ok: bool = False
    seconds: float = 0.0
    error: str | None = None
    stdout_tail: str = ""
    result: dict | None = field(default=None)


def generate_steps(out: Path, dry: bool, models: Path) -> list[Step]:
    """Eager: every dtype x batch x decoder; compiled: float16 at batch 32 (each shape compiles anew, so the
    8-minute budget holds one batch size)."""
    bench = [sys.executable, str(ROOT / "bench" / "generate.py"), "--models", str(models)]
    if dry:
        return [Step("generate", bench + ["--device", "cpu", "--dtypes", "float32", "--batches", "2", "--frames", "2",
                                          "--repeats", "1", "--decoders", "tiny", "--modes", "eager",
                                          "--decode-ratio", "--json", str(out / "generate.json")],
                     240, out / "generate.json")]
    return [
        Step("generate eager", bench + ["--device", "cuda", "--dtypes", "float32", "float16", "bfloat16",
                                        "--batches", "1", "8", "16", "32", "64", "--decoders", "vae", "tiny",
                                        "--modes", "eager", "--repeats", "1", "--decode-ratio", "--budget-s", "80",
                                        "--json", str(out / "generate-eager.json")], 120, out / "generate-eager.json"),
        Step("generate compiled", bench + ["--device", "cuda", "--dtypes", "float16", "--batches", "32",
                                           "--decoders", "tiny", "vae", "--modes", "cudagraphs", "compile",
                                           "--repeats", "1", "--no-baseline", "--budget-s", "70",
                                           "--json", str(out / "generate-compiled.json")], 110,
             out / "generate-compiled.json"),
    ]


def dub_steps(out: Path, dry: bool, models: Path, media: Path) -> list[Step]:
    bench = [sys.executable, str(ROOT / "bench" / "dub.py"), "--models", str(models), "--audio",
             str(media / "speech.wav")]
    if dry:
        plan = [("dub 360p", 360, "tiny", ["--device", "cpu", "--batch-size", "4", "--seconds", "0.4"])]
    else:
        gpu = ["--device", "cuda", "--batch-size", "32", "--seconds", "4"]
        plan = [("dub 720p vae", 720, "vae", gpu), ("dub 720p tiny", 720, "tiny", gpu),
                ("dub 1080p tiny", 1080, "tiny", gpu)]
    steps = []
    for name, height, decoder, extra in plan:
        json_out = out / f"{name.replace(' ', '-')}.json"
        steps.append(Step(name, bench + ["--source", str(media / f"sun{height}.mp4"), "--face-records",
                                         str(media / f"sun{height}.npz"), "--decoder", decoder, "--json",
                                         str(json_out)] + extra, 150 if dry else 60, json_out))
    return steps


def media_step(out: Path) -> Step:
    """The dry run's inputs: a 10-frame 360p clip with its face records (analysed here, on CPU)."""
    return Step("media", [sys.executable, str(ROOT / "bench" / "gpu_media.py"), str(out), "--heights", "360",
                          "--seconds", "0.4"], 120)


def realtime_step(dry: bool, models: Path, media: Path) -> Step:
    """Sessions at real-time pace until the p95 latency passes 200 ms (bench/realtime.py decides)."""
    height = 360 if dry else 720
    bench = [sys.executable, str(ROOT / "bench" / "realtime.py"), "--models", str(models), "--max-p95", "0.2",
             "--audio", str(media / "speech.wav"), "--avatar", str(media / f"sun{height}.mp4"),
             "--face-records", str(media / f"sun{height}.npz")]
    if dry:
        return Step("realtime", bench + ["--device", "cpu", "--sessions", "1", "--seconds", "1", "--budget-ms",
                                         "1000"], 400)
    return Step("realtime", bench + ["--device", "cuda", "--fp16", "--decoder", "tiny",
                                     "--sessions", "1,2,4,8,12,16,24,32,48"], 90)


def run_step(step: Step, deadline: float, env: dict[str, str]) -> None:
    """Run ``step`` within its timeout and the overall deadline; record the outcome, never raise."""
    timeout = min(step.timeout_s, deadline - time.monotonic())
    if timeout <= 5:
        step.error = "skipped: the overall time budget is spent"
        return
    print(f"[gpu] {step.name} (up to {timeout:.0f} s) ...", flush=True)
    if step.json_out is not None:
        step.json_out.unlink(missing_ok=True)  # an earlier run's result is not this one's
    start = time.monotonic()
    try:
        proc = subprocess.Popen(step.command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
    except OSError as exc:
        step.error = f"could not start: {exc}"
        print(f"[gpu] {step.name}: {step.error}", flush=True)
        return
    try:
        output, _ = proc.communicate(timeout=timeout)
        step.ok = proc.returncode == 0
        step.error = None if step.ok else f"exit status {proc.returncode}"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the step's whole group: a bench's server goes with it
        output, _ = proc.communicate()
        step.error = f"timed out after {timeout:.0f} s"
    step.stdout_tail = output[-3000:]
    step.seconds = round(time.monotonic() - start, 1)
    if step.json_out is not None:
        read_result(step)
    print(f"[gpu] {step.name}: {'ok' if step.ok else step.error} in {step.seconds} s", flush=True)


def read_result(step: Step) -> None:
    """``step.result`` from its JSON file; a missing, truncated or non-object file fails the step (an
    earlier error, such as a time-out, stays the reason shown)."""
    problem = None
    if not step.json_out.is_file():
        problem = f"no result written to {step.json_out}"
    else:
        try:
            result = json.loads(step.json_out.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            problem = f"unreadable result {step.json_out}: {exc}"
        else:
            if isinstance(result, dict):
                step.result = result
            else:
                problem = f"unreadable result {step.json_out}: not a JSON object"
    if problem is not None:
        step.ok = False
        step.error = step.error or problem


def machine() -> dict:
    """Versions and the GPU; what cannot be found out says why (the report is written regardless)."""
    info: dict = {"python": sys.version.split()[0]}
    try:
        import torch

        info.update(torch=torch.__version__, cuda=torch.cuda.is_available())
        if info["cuda"]:
            info.update(gpu=torch.cuda.get_device_name(0), cuda_version=torch.version.cuda)
    except Exception as exc:  # noqa: BLE001 - shown in the report
        info["error"] = f"{exc.__class__.__name__}: {exc}"
    return info


def cell(record, key: str, spec: str = "", empty: str = "") -> str:
    """``record[key]`` for a table cell (formatted with ``spec``): ``?`` when missing or not formattable,
    ``empty`` when None."""
    if not isinstance(record, dict) or key not in record:
        return "?"
    value = record[key]
    if value is None:
        return empty
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return "?"


def markdown(report: dict) -> str:
    """The report as Markdown: steps, generate rows, dub results, the real-time table. Missing figures show
    as ``?``; a section that cannot be drawn says so (the rest of the report still is)."""
    lines = [f"# GPU report ({'dry run on CPU' if report['dry'] else 'GPU'})", "",
             f"Machine: {json.dumps(report['machine'])}; total {report['seconds']} s.", "",
             "| step | ok | seconds | error |", "|---|---|---|---|"]
    lines += [f"| {s['name']} | {'yes' if s['ok'] else 'no'} | {s['seconds']} | {s['error'] or ''} |"
              for s in report["steps"]]
    for s in report["steps"]:
        if "rows" in (s["result"] or {}):
            lines += section(s["name"], generate_lines, s["result"])
    dubs = [s for s in report["steps"] if s["name"].startswith("dub") and s["result"]]
    if dubs:
        lines += section("dub end to end", dub_lines, dubs)
    for s in report["steps"]:
        if s["name"] in ("realtime", "cuda tests"):
            lines += ["", f"## {s['name']} (output tail)", "", "```", s["stdout_tail"].strip()[-2500:], "```"]
    return "\n".join(lines) + "\n"


def section(title: str, draw, data) -> list[str]:
    """``## title`` and the lines ``draw(data)`` makes, or one line saying why they could not be drawn."""
    try:
        body = draw(data)
    except Exception as exc:  # noqa: BLE001 - a malformed result must not cost the whole report
        body = [f"Could not be drawn: {exc.__class__.__name__}: {exc} (the raw result is in gpu-report.json)."]
    return ["", f"## {title}", "", *body]


def generate_lines(result: dict) -> list[str]:
    lines = []
    if "baseline_fps" in result:
        lines.append(f"Per-frame float32 loop: {result['baseline_fps']} frames/s.")
    if "decode" in result:
        lines.append(f"Decode alone: {json.dumps(result['decode'])}.")
    lines += ["", "| dtype | decoder | mode | batch | frames/s | warm-up s | peak GPU MiB | error |",
              "|---|---|---|---|---|---|---|---|"]
    keys = ("dtype", "decoder", "mode", "batch", "frames_per_second", "warmup_seconds", "peak_gpu_mib", "error")
    lines += ["| " + " | ".join(cell(r, k) for k in keys) + " |" for r in result["rows"]]
    return lines


def dub_lines(dubs: list[dict]) -> list[str]:
    lines = ["| run | frames | frames/s | device idle | encoder | peak GPU MiB |", "|---|---|---|---|---|---|"]
    for s in dubs:
        r = s["result"]
        lines.append(f"| {s['name']} | {cell(r, 'frames')} | {cell(r, 'frames_per_second', '.1f')} | "
                     f"{cell(r, 'device_idle_fraction', '.0%')} | {cell(r, 'video_encoder')} | "
                     f"{cell(r, 'peak_gpu_mib')} |")
    return lines


def write_report(out: Path, dry: bool, started: float, steps: list[Step]) -> dict:
    """Write OUT/gpu-report.json and OUT/gpu-report.md for ``steps`` (``started``: time.monotonic() at the
    start; a step that never ran says so); returns the report."""
    for step in steps:
        if not step.ok and step.error is None:
            step.error = "not run"
    report = {"dry": dry, "machine": machine(), "seconds": round(time.monotonic() - started, 1),
              "steps": [{k: str(v) if isinstance(v, Path) else v for k, v in asdict(step).items() if k != "command"}
                        | {"command": " ".join(step.command)} for step in steps]}
    (out / "gpu-report.json").write_text(json.dumps(report, indent=2))
    (out / "gpu-report.md").write_text(markdown(report))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder for gpu-report.md, gpu-report.json and the bench outputs")
    parser.add_argument("--dry", action="store_true", help="CPU, tiny models, one configuration per bench")
    parser.add_argument("--media", type=Path, default=MEDIA,
                        help="clips, speech.wav and face records (a dry run makes its own in OUT/media)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="start nothing after this many seconds (default 450; a dry run: no limit)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.monotonic()
    deadline = started + (args.budget_s or (float("inf") if args.dry else 450))
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    models = args.out / "models"
    test_files = ["tests/speed/test_decoder_and_fast_path.py"]
    if not args.dry:
        test_files += ["tests/core/test_generate.py", "tests/dub/test_fast_dub.py"]
    tests = Step("cuda tests", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda",
                                *test_files], 150 if args.dry else 60)
    media = args.out / "media" if args.dry else args.media
    if not args.dry and not (media / "speech.wav").is_file():
        log.warning("no inputs in %s: run `make gpu-media` on a CPU machine and carry bench/media", media)
    eager, *compiled = generate_steps(args.out, args.dry, models)  # compiling is slow: after the dubs
    steps = [*([media_step(media)] if args.dry else []), tests, eager, *dub_steps(args.out, args.dry, models, media),
             *compiled, realtime_step(args.dry, models, media)]
    try:
        from musetalk.models.random_init import write_random_models

        print(f"[gpu] writing {'tiny' if args.dry else 'full-size'} random models to {models}", flush=True)
        write_random_models(models, size="tiny" if args.dry else "full", versions=("v1.5",))
        for step in steps:
            run_step(step, deadline, env)
    finally:  # even when interrupted or the models could not be written: the report says what ran
        report = write_report(args.out, args.dry, started, steps)
    print(f"[gpu] wrote {args.out / 'gpu-report.md'} and gpu-report.json in {report['seconds']} s", flush=True)

if __name__ == "__main__":
    main()
