"""Evaluation of lip-synced clips: the paper's metrics (LSE-C/D, CSIM, FID), offline checks (PSNR/SSIM,
LMD, audio-visual offset) and an HTML report. Entry point: :func:`evaluate`."""
from .pairs import PROTOCOLS, EvalInputError, EvalPair, pairs_from_csv, pairs_from_folder
from .run import EvalResult, evaluate

__all__ = ["PROTOCOLS", "EvalInputError", "EvalPair", "EvalResult", "evaluate", "pairs_from_csv", "pairs_from_folder"]
