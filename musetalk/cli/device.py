"""The ``--device`` of every command: CUDA when torch sees a GPU, else the CPU, unless one is given."""
from __future__ import annotations

import argparse

from ..pipeline.device import default_device

DEVICE_HELP = "torch device: cpu, cuda, cuda:1, ... (default: cuda when available, else cpu)"


def add_device_argument(parser: argparse.ArgumentParser, what: str = "") -> None:
    """``--device`` (default None: :func:`default_device` when the command runs); ``what`` says what runs there."""
    parser.add_argument("--device", default=None, help=DEVICE_HELP + (f"; {what}" if what else ""))




def chosen_device(given: str | None) -> str:
    """The ``--device`` given, else :func:`default_device`."""
    return given or default_device()
