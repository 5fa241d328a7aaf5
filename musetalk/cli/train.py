"""``musetalk train``: prepare training data from videos, run stage 1 / stage 2 training."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..models.layout import ENV_VAR
from .device import add_device_argument, chosen_device

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="prepare data and train the UNet (stage 1, stage 2)",
                       description="Train MuseTalk on your own talking-head videos: `prepare` turns a folder of videos "
                                   "into training shards, `stage1` and `stage2` train the UNet (Hugging Face Accelerate: "
                                   "run under `accelerate launch -m musetalk.cli.main train ...` for multi-GPU) and "
                                   "export a models folder that `musetalk dub --models` uses.")
    jobs = p.add_subparsers(dest="job", metavar="JOB", required=True)
    prep = jobs.add_parser("prepare", help="videos -> training shards (resumable)",
                           description="Re-time every video to 25 fps, track the face, store crops, landmarks, crop boxes, "
                                       "head pose, audio, whisper features and SyncNet mels per clip. Clips without sound "
                                       "use a sidecar audio file of the same name. Finished clips are skipped on re-runs.")
    prep.add_argument("videos", type=Path, metavar="VIDEOS_DIR", help="folder of videos (searched recursively)")
    prep.add_argument("--out", type=Path, required=True, metavar="DATA_DIR", help="output folder for the shards")
    prep.add_argument("--models", help=f"models folder with whisper/ (default: ${ENV_VAR} or ./models)")
    add_device_argument(prep, "the whisper encoder runs there")
    prep.add_argument("--min-stretch", type=int, default=5, help="drop face stretches shorter than this many frames")
    prep.set_defaults(func=run_prepare)
    for stage in (1, 2):
        st = jobs.add_parser(f"stage{stage}", help=f"train stage {stage}",
                             description=f"Train stage {stage} with the packaged official config, a --config file on top, "
                                         "and dotted overrides last, e.g. solver.learning_rate=1e-4 data.batch_size=8. "
                                         "Resumes from the latest checkpoint in output_dir.")
        st.add_argument("--config", type=Path, help=f"YAML config (default: the packaged stage{stage}.yaml)")
        st.add_argument("--allow-random-aux", action="store_true",
                        help="train against a random VGG / SyncNet when their weights are missing (smoke runs only; "
                             "`musetalk download --train` fetches the real ones)")
        st.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
        st.set_defaults(func=run_stage, stage=stage)


def run_prepare(args: argparse.Namespace) -> int:
    from ..train.prepare import Preparer

    progress = logging.getLogger().level <= logging.INFO
    summary = Preparer(args.models, chosen_device(args.device), args.min_stretch, progress=progress).prepare_all(args.videos, args.out)
    log.info("%d clips prepared, %d already done, %d skipped stretches/clips (see %s)", len(summary["prepared"]),
             len(summary["resumed"]), len(summary["skipped"]), args.out / "skipped.json")
    return 0


def run_stage(args: argparse.Namespace) -> int:
    from ..train.config import load_config
    from ..train.loop import Trainer

    overrides = [*args.overrides, *(["allow_random_aux=true"] if args.allow_random_aux else [])]
    cfg = load_config(args.stage, args.config, overrides)
    progress = logging.getLogger().level <= logging.INFO
    out = Trainer(cfg, progress=progress).train()
    log.info("stage %d done: models folder %s (use with `musetalk dub --models %s`)", args.stage, out, out)
    return 0
