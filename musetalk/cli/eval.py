"""``musetalk eval``: score dubbed clips (LSE-C/D, CSIM, FID, PSNR/SSIM, LMD, AV offset) into a table and
an optional HTML report."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..models.layout import ENV_VAR
from .device import add_device_argument, chosen_device

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score dubbed clips: lip sync, identity, quality",
                       description="Score generated clips against their sources: LSE-C/LSE-D (SyncNet), CSIM "
                                   "(dlib face descriptor), FID (Inception), PSNR/SSIM of face and mouth, LMD and an "
                                   "audio-visual offset. Writes metrics.csv, metrics.json and prints a markdown table.")
    p.add_argument("generated", help="generated video, or a CSV of pairs (columns generated,source[,audio,protocol,"
                                     "name,dub_fps]), or a folder with generated/, source/ and optional audio/")
    p.add_argument("--source", help="source video or photo (single pair)")
    p.add_argument("--audio", help="driving audio (single pair; default: the generated video's audio track)")
    p.add_argument("--protocol", choices=("reconstruction", "cross-audio"), default="reconstruction",
                   help="reconstruction: dubbed with its own audio, compared frame by frame; cross-audio: other "
                        "speech, reference-free metrics only (default: reconstruction)")
    p.add_argument("--out", default="eval_out", help="folder for metrics.csv and metrics.json (default: eval_out)")
    p.add_argument("--report", metavar="DIR", help="also write an HTML report with frame strips and plots to DIR")
    p.add_argument("--models", help=f"models folder with syncnet/syncnet_v2.model and fid/pt_inception-*.pth "
                                    f"(default: ${ENV_VAR} or ./models)")
    p.add_argument("--syncnet", help="SyncNet weights (syncnet_v2.model) if not in the models folder")
    p.add_argument("--inception", help="FID Inception weights (pt_inception-2015-12-05-6726825d.pth) if not in "
                                       "the models folder")
    p.add_argument("--no-csim", action="store_true", help="skip the identity metric")
    p.add_argument("--csim-stride", type=int, default=1, help="use every N-th frame for CSIM (default: 1)")
    p.add_argument("--max-frames", type=int, help="score only the first N frames of each clip")
    add_device_argument(p, "SyncNet and Inception run there")
    p.set_defaults(func=run)


def _pairs(args: argparse.Namespace) -> list:
    from ..eval import EvalInputError, EvalPair, pairs_from_csv, pairs_from_folder

    target = Path(args.generated)
    if target.is_dir():
        return pairs_from_folder(target, args.protocol)
    if target.suffix.lower() == ".csv":
        return pairs_from_csv(target)
    if not args.source:
        raise EvalInputError(f"--source is needed to evaluate the single clip {target}")
    return [EvalPair(target, Path(args.source), Path(args.audio) if args.audio else None, args.protocol)]


def run(args: argparse.Namespace) -> int:
    from ..eval import EvalInputError, evaluate

    result = evaluate(_pairs(args), out_dir=args.out, report_dir=args.report, models_dir=args.models,
                      syncnet=args.syncnet, inception=args.inception, identity=not args.no_csim,
                      max_frames=args.max_frames, csim_stride=max(1, args.csim_stride),
                      device=chosen_device(args.device))
    print(result.to_markdown())
    log.info("tables written to %s%s", args.out, f", report to {args.report}/index.html" if args.report else "")
    if result.failures:
        failed = "; ".join(f"{f.label}: {f.error}" for f in result.failures)
        raise EvalInputError(f"{len(result.failures)} of {len(result.outcomes)} pairs not scored ({failed})")
    return 0
