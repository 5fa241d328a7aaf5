"""Per-stage time, end-to-end frames/s and the model device's idle share of ``musetalk dub``.

    python bench/dub.py --size tiny --seconds 4
    python bench/dub.py --size full --seconds 0.4            # CPU: ~5 s per frame
    python bench/dub.py --size full --device cuda --batch-size 32 --decoder tiny --compile cudagraphs \\
        --source bench/media/sun720.mp4 --face-records bench/media/sun720.npz --seconds 10 --json dub.json
Stages overlap (decode + face analysis in one thread, generation in another, paste + encode in a third),
so stage times can add up to more than the wall time. ``--face-records`` skips face analysis (records made
beforehand, e.g. by bench/gpu_media.py, for machines without the dlib landmark model).
"""
from __future__ import annotations

import argparse
import json
import logging
import resource
import tempfile
from dataclasses import asdict
from pathlib import Path

from musetalk.models.random_init import write_random_models
from musetalk.pipeline.dub import DubOptions, dub
from musetalk.video import atomic_output

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"


def peak_gpu_mib(device: str) -> float | None:
    """Peak memory torch allocated on a CUDA ``device`` in this process; None elsewhere."""
    import torch

    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.startswith("cuda") else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--models", help="real models folder (default: random weights of --size)")
    parser.add_argument("--source", default=str(MEDIA / "sun.mp4"))
    parser.add_argument("--audio", default=str(MEDIA / "sun.wav"))
    parser.add_argument("--face-records", help="face records (.npz) of the source's frames: no face analysis")
    parser.add_argument("--seconds", type=float, default=4.0, help="audio seconds to dub")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--decoder", choices=("vae", "tiny"), default="vae")
    parser.add_argument("--compile", choices=("off", "compile", "cudagraphs"), default="off")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    models = args.models or write_random_models(tempfile.mkdtemp(prefix="bench-models-"), size=args.size, versions=("v1.5",))
    out = Path(tempfile.mkdtemp(prefix="bench-dub-")) / "out.mp4"
    options = DubOptions(models=str(models), device=args.device, dtype=args.dtype, decoder=args.decoder,
                         compile=args.compile, face_records=args.face_records, batch_size=args.batch_size,
                         end=args.seconds, progress=False)
    result = dub(args.source, args.audio, out, options)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"# {args.size} models, {args.device} {args.dtype}, {args.decoder} decoder, compile {args.compile}, "
          f"batch {args.batch_size}: {result.frames} frames of {Path(args.source).name} in {result.seconds:.2f} s = "
          f"{result.frames_per_second:.2f} frames/s end to end; model device idle "
          f"{result.device_idle_fraction:.0%} of the generation window; video encoder {result.video_encoder}; "
          f"peak RSS {peak_rss_mb:.0f} MB")
    print("| stage | seconds | ms/frame | share of wall time |")
    print("|---|---|---|---|")
    for stage, seconds in sorted(result.stage_seconds.items(), key=lambda kv: -kv[1]):
        print(f"| {stage} | {seconds:.2f} | {1000 * seconds / result.frames:.1f} | {seconds / result.seconds:.0%} |")
    if args.json:
        record = {**asdict(result), "frames_per_second": result.frames_per_second, "peak_rss_mb": round(peak_rss_mb),
                  "peak_gpu_mib": peak_gpu_mib(args.device), "options": {k: v for k, v in vars(args).items() if k != "json"}}
        with atomic_output(args.json) as tmp:
            tmp.write_text(json.dumps(record, indent=2, default=str))


if __name__ == "__main__":
    main()
