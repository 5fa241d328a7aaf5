"""``musetalk download``: fetch the official weights into the models folder."""
from __future__ import annotations

import argparse
import logging

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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    root = resolve_models_dir(args.models)
    if args.if_missing and not model_paths(root, "v1.5").missing():
        log.info("models present in %s", root)
        return 0
    versions = VERSIONS if args.version == "all" else (args.version,)
    written = download(root, versions, face_parsing=not args.no_face_parsing, force=args.force)
    log.info("%d files written to %s", len(written), root)
    return 0
