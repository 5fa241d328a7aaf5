"""``musetalk download``: fetch the official weights into the models folder."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..errors import ModelFilesError
from ..models.download import download
from ..models.layout import ENV_VAR, VERSIONS, model_paths, resolve_models_dir

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("download", help="download the official model files",
                       description="Download the official MuseTalk, sd-vae-ft-mse and whisper-tiny files from the "
                                   "Hugging Face Hub into the official folder layout.")
    p.add_argument("--models", help=f"models folder (default: ${ENV_VAR} or ./models)")
    p.add_argument("--version", choices=(*VERSIONS, "all"), default="all", help="UNet version(s) to fetch (default: all)")
    p.add_argument("--no-face-parsing", action="store_true", help="skip the optional BiSeNet face-parsing weights")
    p.add_argument("--if-missing", action="store_true",
                   help="do nothing when the files needed by the default version (v1.5) are already present")
    p.add_argument("--force", action="store_true", help="download again even when files exist")
    p.add_argument("--train", action="store_true", help="also fetch the networks of the training losses: ImageNet "
                                                        "VGG19 (timm/vgg19.tv_in1k) and LatentSync's SyncNet")
    p.add_argument("--eval", action="store_true", help="also fetch the evaluation networks: SyncNet v2 (LSE-C/LSE-D); "
                                                       "says where to get the FID Inception, which no hub hosts")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    root = resolve_models_dir(args.models)
    if args.if_missing and not model_paths(root, "v1.5").missing():
        log.info("models present in %s", root)
        return 0
    versions = VERSIONS if args.version == "all" else (args.version,)
    extras = tuple(name for name in ("train", "eval") if getattr(args, name))
    written = download(root, versions, face_parsing=not args.no_face_parsing, force=args.force, extras=extras)
    log.info("%d files written to %s", len(written), root)
    if args.eval:
        require_fid_weights(root)
    return 0


def require_fid_weights(root: Path) -> None:
    """Raise with the exact source and place of the FID Inception weights when they are missing."""
    from ..eval.inception import WEIGHTS_NAME, WEIGHTS_URL

    target = root / "fid" / WEIGHTS_NAME
    if not target.is_file():
        raise ModelFilesError(f"the FID Inception weights are on no model hub: download {WEIGHTS_URL} and save it as "
                              f"{target} (everything else is in place)")
