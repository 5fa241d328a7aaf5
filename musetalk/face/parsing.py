"""Face-parsing regions with BiSeNet (official ``79999_iter.pth``), as the official blend uses them."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import torch

from ..errors import FaceError
from ..models.bisenet import BiSeNet, load_bisenet
from ..models.layout import model_paths
from .modes import DEFAULT_BLEND_MODE, MODES

log = logging.getLogger(__name__)

PARSE_SIZE = 512
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
SKIN, NOSE, MOUTH_CLASSES, NECK = 1, 10, (11, 12, 13), 14


def _cone_kernel(cone: int = 21, tail: int = 12) -> np.ndarray:
    """uint8 (cone+tail) square kernel: a downward-opening triangle then a vertical bar of its base width,
    so dilating skin with it grows the jaw downwards."""
    size = cone + tail
    kernel = np.zeros((size, size), np.uint8)
    centre = size // 2
    for row in range(cone // 2, cone):
        half = row - cone // 2
        kernel[row, centre - half:centre + half + 1] = 1
    base = cone - 1 - cone // 2
    kernel[cone:, centre - base:centre + base + 1] = 1
    return kernel


def _cheek_mask(left: int, right: int) -> np.ndarray:
    """bool (512, 512): True on the cheek bands left of ``256 - left`` and right of ``256 + right``."""
    cols = np.arange(PARSE_SIZE)
    band = (cols < PARSE_SIZE // 2 - left) | (cols >= PARSE_SIZE // 2 + right)
    return np.broadcast_to(band, (PARSE_SIZE, PARSE_SIZE))


class FaceParser:
    """BiSeNet parsing of a face image (the expanded face box) into blend regions.

    cheek_widths: half-widths (px of the 512 map) kept un-eroded around the centre in ``jaw`` mode.
    """

    def __init__(self, net: BiSeNet, cheek_widths: tuple[int, int] = (90, 90), device: str = "cpu") -> None:
        self.net = net.to(device).eval()
        self.device = device
        self.kernel = _cone_kernel()
        self.cheek_kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (35, 3))
        self.cheeks = _cheek_mask(*cheek_widths)

    @torch.no_grad()
    def classes(self, image: np.ndarray) -> np.ndarray:
        """uint8 (512, 512) class map of ``image`` (uint8 (H, W, 3) RGB), parsed at 512x512."""
        small = cv2.resize(image, (PARSE_SIZE, PARSE_SIZE), interpolation=cv2.INTER_LINEAR)
        x = (small.astype(np.float32) / 255.0 - MEAN) / STD
        x = torch.from_numpy(x.transpose(2, 0, 1)).unsqueeze(0).to(self.device)
        return self.net(x)[0].argmax(0).to(torch.uint8).cpu().numpy()

    def region(self, image: np.ndarray, mode: str = DEFAULT_BLEND_MODE) -> np.ndarray:
        """uint8 (H, W) 0/255 region to replace: ``raw`` skin + mouth + lips, ``neck`` adds the neck,
        ``jaw`` grows the skin downwards (cheeks eroded), without the nose, plus mouth and lips."""
        parsing = self.classes(image)
        mouth = np.isin(parsing, MOUTH_CLASSES)
        if mode == "raw":
            keep = (parsing == SKIN) | mouth
        elif mode == "neck":
            keep = (parsing == SKIN) | (parsing == NECK) | mouth
        elif mode == "jaw":
            skin = (parsing == SKIN).astype(np.uint8) * 255
            grown = cv2.dilate(skin, self.kernel, iterations=1)
            eroded = cv2.erode(grown, self.cheek_kernel, iterations=2)
            jaw = np.where(self.cheeks, eroded, grown) > 0
            keep = (jaw & (parsing != NOSE)) | mouth
        else:
            raise FaceError(f"unknown blend mask mode {mode!r}: use one of {MODES}")
        region = keep.astype(np.uint8) * 255
        return cv2.resize(region, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)


def load_face_parser(models_dir: str | os.PathLike | None = None, device: str = "cpu") -> FaceParser | None:
    """The BiSeNet parser from ``models_dir/face-parse-bisent/79999_iter.pth``, or None when absent."""
    path = Path(model_paths(models_dir, "v1.5").face_parsing_weights)
    if not path.is_file():
        log.info("no face-parsing weights at %s: using the landmark blend mask", path)
        return None
    return FaceParser(load_bisenet(path), device=device)
