"""Batch dubbing on Ray against one process: clips/hour and frames/s with 1 and 2 workers (their ratio),
and Ray's per-job overhead against the in-process ``dub --jobs`` (one model load, jobs one after another).

    python bench/cluster.py --clips 6 --seconds 0.4                 # tiny random models, local Ray instance
    python bench/cluster.py --models models --clips 20 --seconds 4 --address auto --cpus-per-worker 4
On one machine the workers share its cores: the 2-worker ratio shows how well two model processes fill
them (on a cluster each worker has its own GPU or cores). Worker start-up (model loading) is measured
apart and left out of the rates.
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import soundfile as sf

from musetalk.distributed.batch import BatchRun, ClusterOptions, jobs_from_rows
from musetalk.models.random_init import write_random_models
from musetalk.pipeline.dub import DubOptions, dub, load_model
from musetalk.video import VideoWriter, read_frames

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"


def make_inputs(folder: Path, clips: int, frames: int, seconds: float) -> list[dict[str, str]]:
    """``clips`` clips of ``frames`` frames cut one after another from sun.mp4, each with ``seconds`` of
    sun.wav: the rows of a jobs CSV (outputs under ``folder``)."""
    reader = read_frames(MEDIA / "sun.mp4")
    samples, rate = sf.read(MEDIA / "sun.wav", dtype="float32")
    sf.write(folder / "speech.wav", samples[: int(rate * seconds)], rate)
    rows = []
    for k in range(clips):
        first = next(reader)
        with VideoWriter(folder / f"clip{k}.mp4", first.shape[1], first.shape[0], 25) as writer:
            writer.write(first)
            for _ in range(frames - 1):
                writer.write(next(reader))
        rows.append({"source": f"clip{k}.mp4", "audio": "speech.wav", "output": f"out-{{run}}/dub{k}.mp4"})
    return rows


def rows_for(rows: list[dict[str, str]], folder: Path, run: str) -> list[dict[str, str]]:
    (folder / f"out-{run}").mkdir()
    return [{**row, "output": row["output"].format(run=run)} for row in rows]


def in_process(rows: list[dict[str, str]], folder: Path, options: DubOptions) -> tuple[float, int]:
    """Seconds and frames of the rows dubbed one after another with one model (as ``dub --jobs``)."""
    model = load_model(options)
    started = time.perf_counter()
    frames = sum(dub(folder / row["source"], folder / row["audio"], folder / row["output"], options, model).frames
                 for row in rows)
    return time.perf_counter() - started, frames


def on_ray(rows: list[dict[str, str]], folder: Path, options: DubOptions, cluster: ClusterOptions
           ) -> tuple[float, float, int, float]:
    """Seconds to start the workers, seconds of the jobs once they are ready, frames dubbed, and the
    seconds the workers spent inside the jobs."""
    run = BatchRun(jobs_from_rows(rows, folder), options, cluster)
    started = time.perf_counter()
    results = run.run()
    ended = time.perf_counter()
    return (run.first_ready_at - started, ended - run.first_ready_at, sum(r.frames for r in results),
            sum(r.seconds for r in results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", help="real models folder (default: tiny random weights)")
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--frames", type=int, default=5, help="frames per source clip")
    parser.add_argument("--seconds", type=float, default=0.4, help="audio seconds per job")
    parser.add_argument("--address", help="Ray cluster (default: a local instance)")
    parser.add_argument("--cpus-per-worker", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    folder = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    models = args.models or write_random_models(folder / "models", size="tiny", versions=("v1.5",))
    options = DubOptions(models=str(models), progress=False)
    rows = make_inputs(folder, args.clips, args.frames, args.seconds)

    local_s, local_frames = in_process(rows_for(rows, folder, "local"), folder, options)
    print(f"# {args.clips} jobs of {args.seconds:g} s ({local_frames // args.clips} frames) each")
    print("| run | workers | start-up s | jobs s | clips/hour | frames/s |")
    print("|---|---|---|---|---|---|")
    print(f"| in-process --jobs | 1 | - | {local_s:.1f} | {3600 * args.clips / local_s:.0f} | "
          f"{local_frames / local_s:.2f} |")
    rates = {}
    for workers in (1, 2):
        cluster = ClusterOptions(address=args.address, workers=workers, cpus_per_worker=args.cpus_per_worker)
        startup, jobs_s, frames, inside_s = on_ray(rows_for(rows, folder, f"ray{workers}"), folder, options, cluster)
        rates[workers] = frames / jobs_s
        print(f"| Ray | {workers} | {startup:.1f} | {jobs_s:.1f} | {3600 * args.clips / jobs_s:.0f} | "
              f"{rates[workers]:.2f} |")
        if workers == 1:
            against_local, outside_jobs = (jobs_s - local_s) / args.clips, (jobs_s - inside_s) / args.clips
    print(f"2 workers / 1 worker: {rates[2] / rates[1]:.2f}x frames/s. Ray per job with 1 worker: "
          f"{1000 * outside_jobs:.0f} ms outside the dub itself (scheduling, results, commit), "
          f"{1000 * against_local:+.0f} ms against the in-process --jobs run (includes load noise)")


if __name__ == "__main__":
    main()
