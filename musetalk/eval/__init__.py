"""Evaluation of lip-synced clips: the paper's metrics (LSE-C/D, CSIM, FID), offline checks (PSNR/SSIM,
LMD, audio-visual offset) and an HTML report. Entry point: :func:`evaluate`."""
from .pairs import PROTOCOLS, BadPair, EvalInputError, EvalPair, pairs_from_csv, pairs_from_folder
from .results import EvalResult, PairFailure
from .run import evaluate

__all__ = ["PROTOCOLS", "BadPair", "EvalInputError", "EvalPair", "EvalResult", "PairFailure", "evaluate",
           "pairs_from_csv", "pairs_from_folder"]
