"""``musetalk`` command line: one sub-command per job; each lives in its own module with
``register(subparsers)`` that adds its parser and sets ``func(args) -> int``."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys

from ..errors import MuseTalkError

COMMANDS = ("download", "dub", "say", "avatar", "serve", "publish", "train", "eval", "face_debug")


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
    # The model libraries read these when first imported (importing them here would cost every command,
    # even one refused for a bad flag, seconds): only errors, no download or loading bars of theirs.
    for variable in ("DIFFUSERS_VERBOSITY", "TRANSFORMERS_VERBOSITY", "HF_HUB_VERBOSITY"):
        os.environ.setdefault(variable, "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in ("diffusers.utils.logging", "transformers.utils.logging", "huggingface_hub.utils.logging"):
        if (lib := sys.modules.get(name)) is not None:  # already imported (in-process use)
            lib.set_verbosity_error()
            if hasattr(lib, "disable_progress_bar"):  # the hub's bars follow the variable above
                lib.disable_progress_bar()


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
    except Exception as exc:  # a bug or an unforeseen environment problem: one line, the traceback with -v
        if args.verbose:
            raise
        print(f"musetalk: error: {args.command} failed unexpectedly: {exc.__class__.__name__}: {_first_line(exc)} "
              "(run with -v for the traceback)", file=sys.stderr)
        return 1


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else "no message"


if __name__ == "__main__":
    sys.exit(main())
