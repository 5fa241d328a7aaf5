"""Per-stage time and end-to-end frames/s of ``musetalk dub`` on sun.mp4 + sun.wav.

    python bench/dub.py --size tiny --seconds 4
    python bench/dub.py --size full --seconds 0.4            # CPU: ~5 s per frame
    python bench/dub.py --size full --device cuda --dtype float16 --batch-size 32 --seconds 22
Stages overlap (decode + face analysis in one thread, generation in another, paste + encode in a third),
so stage times can add up to more than the wall time.
"""
from __future__ import annotations

import argparse
import logging
import resource
import tempfile
from pathlib import Path

from musetalk.models.random_init import write_random_models
from musetalk.pipeline.dub import DubOptions, dub

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--models", help="real models folder (default: random weights of --size)")
    parser.add_argument("--source", default=str(MEDIA / "sun.mp4"))
    parser.add_argument("--audio", default=str(MEDIA / "sun.wav"))
    parser.add_argument("--seconds", type=float, default=4.0, help="audio seconds to dub")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    models = args.models or write_random_models(tempfile.mkdtemp(prefix="bench-models-"), size=args.size, versions=("v1.5",))
    out = Path(tempfile.mkdtemp(prefix="bench-dub-")) / "out.mp4"
    options = DubOptions(models=str(models), device=args.device, dtype=args.dtype, batch_size=args.batch_size,
                         end=args.seconds, progress=False)
    result = dub(args.source, args.audio, out, options)
    print(f"# {args.size} models, {args.device} {args.dtype}, batch {args.batch_size}: {result.frames} frames of "
          f"{Path(args.source).name} in {result.seconds:.2f} s = {result.frames_per_second:.2f} frames/s end to end; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    print("| stage | seconds | ms/frame | share of wall time |")
    print("|---|---|---|---|")
    for stage, seconds in sorted(result.stage_seconds.items(), key=lambda kv: -kv[1]):
        print(f"| {stage} | {seconds:.2f} | {1000 * seconds / result.frames:.1f} | {seconds / result.seconds:.0%} |")


if __name__ == "__main__":
    main()
