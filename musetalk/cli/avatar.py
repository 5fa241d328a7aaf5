"""``musetalk avatar``: prepare, list and remove real-time avatars."""
from __future__ import annotations

import argparse
import logging
import sys

from ..models.layout import ENV_VAR as MODELS_ENV
from ..models.layout import VERSIONS
from ..realtime.backend import open_store
from .device import add_device_argument, chosen_device

log = logging.getLogger(__name__)
AVATARS_HELP = "avatars folder (default: $MUSETALK_AVATARS or ./avatars)"
DECODER_CHOICES = ("vae", "tiny")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("avatar", help="prepare, list and remove real-time avatars",
                       description="Real-time avatars: a video or photo prepared once (faces, crops, latents, "
                                   "blend masks) for `musetalk serve`.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    prep = actions.add_parser("prepare", help="prepare a video or photo as an avatar")
    prep.add_argument("source", help="video (mp4, mov, ...) or photo (png, jpg, ...)")
    prep.add_argument("--name", required=True, help="avatar name (letters, digits, '_', '-', '.')")
    prep.add_argument("--avatars", help=AVATARS_HELP)
    prep.add_argument("--models", help=f"models folder (default: ${MODELS_ENV} or ./models)")
    prep.add_argument("--version", choices=VERSIONS, default="v1.5", help="model version (default: v1.5)")
    add_device_argument(prep)
    prep.add_argument("--decoder", choices=DECODER_CHOICES, default="vae",
                      help="latent decoder the avatar will be served with (tiny checks taesd/ is there)")
    prep.add_argument("--max-frames", type=int, default=None, help="use only the first N frames of a video")
    prep.add_argument("--bbox-shift", type=int, default=0, help="v1.0 only: move the mask boundary (pixels)")
    prep.add_argument("--extra-margin", type=int, default=10, help="v1.5: pixels added below the chin (default 10)")
    prep.add_argument("--force", action="store_true", help="prepare again even when up to date")
    prep.set_defaults(func=run_prepare)

    lst = actions.add_parser("list", help="list prepared avatars")
    lst.add_argument("--avatars", help=AVATARS_HELP)
    lst.set_defaults(func=run_list)

    rm = actions.add_parser("remove", help="delete a prepared avatar")
    rm.add_argument("name")
    rm.add_argument("--avatars", help=AVATARS_HELP)
    rm.set_defaults(func=run_remove)


def run_prepare(args: argparse.Namespace) -> int:
    from ..pipeline.lipsync import MuseTalk
    from ..realtime.avatars.store import PrepareSettings

    device = chosen_device(args.device)
    mt = MuseTalk.from_pretrained(args.models, version=args.version, device=device, decoder=args.decoder)
    store = open_store(args.avatars, args.models, mt, device)
    settings = PrepareSettings(bbox_shift=args.bbox_shift, extra_margin=args.extra_margin, max_frames=args.max_frames)
    avatar = store.prepare(args.source, args.name, settings, progress=_log_progress, force=args.force)
    log.info("avatar %s ready in %s: %d frames at %g fps", avatar.name, avatar.path, avatar.num_frames, avatar.fps)
    return 0


def _log_progress(stage: str, done: int, total: int) -> None:
    if done == total:
        log.info("%s: %d/%d", stage, done, total)


def run_list(args: argparse.Namespace) -> int:
    from ..realtime.avatars.store import avatars_dir, list_avatars

    root = avatars_dir(args.avatars)
    rows = list_avatars(root)
    if not rows:
        log.info("no avatars in %s/", root)
        return 0
    lines = [f"{'NAME':<24} {'FRAMES':>6} {'FPS':>6} {'SIZE':>10}  SOURCE"]
    lines += [f"{a['name']:<24} {a['num_frames']:>6} {a['fps']:>6.2f} {a['width']:>4}x{a['height']:<5}  {a['source_name']}"
              for a in rows]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    from ..realtime.avatars.store import avatars_dir, remove_avatar

    remove_avatar(avatars_dir(args.avatars), args.name)
    log.info("removed avatar %s", args.name)
    return 0
