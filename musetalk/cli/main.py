"""``musetalk`` command line: one sub-command per job; each lives in its own module with
``register(subparsers)`` that adds its parser and sets ``func(args) -> int``."""
from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys

from ..errors import MuseTalkError

COMMANDS = ("download", "dub", "say", "avatar", "serve", "train", "eval", "face_debug")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="musetalk",
        description="Lip-sync talking-head videos and photos to any speech (MuseTalk v1.5 / v1.0).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks on errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__package__}.{name}":
                continue
            raise
        module.register(sub)
    return parser


def configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from huggingface_hub.utils import logging as hub_logging

    for lib in (diffusers_logging, transformers_logging):
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    hub_logging.set_verbosity_error()


def _terminate(signum, frame) -> None:
    """SIGTERM unwinds like Ctrl-C, so temporary outputs are removed on the way out."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    if argv is None:
        signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.func(args) or 0)
    except MuseTalkError as exc:
        if args.verbose:
            raise
        print(f"musetalk: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("musetalk: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
