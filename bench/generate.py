"""Frames per second of ``MuseTalk.generate`` (UNet + VAE decode; latents of the crops cached), for batch
sizes, devices and dtypes, with the ratio to a plain per-frame float32 loop measured in the same run.

    python bench/generate.py --size tiny                       # CPU, tiny random models (seconds)
    python bench/generate.py --size full --batches 1 4 --frames 8
    python bench/generate.py --size full --device cuda --dtypes float32 float16 bfloat16 --channels-last
Models are random weights in the official layout (timing equals the real weights); ``--models DIR`` uses real ones.
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time

import numpy as np
import torch

from musetalk import MuseTalk
from musetalk.models.random_init import write_random_models

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def frames_per_second(mt: MuseTalk, latents: torch.Tensor, prompts: np.ndarray, batch: int, repeats: int) -> float:
    """Best of ``repeats`` passes over all frames in batches of ``batch`` (after one warm-up batch)."""
    mt.generate_latents(latents[:batch], prompts[:batch])
    best = float("inf")
    for _ in range(repeats):
        sync(mt.device)
        start = time.perf_counter()
        for i in range(0, len(latents), batch):
            mt.generate_latents(latents[i : i + batch], prompts[i : i + batch])
        sync(mt.device)
        best = min(best, time.perf_counter() - start)
    return len(latents) / best


def load(models: str, device: str, dtype: str, channels_last: bool, compile_unet: bool) -> MuseTalk:
    mt = MuseTalk.from_pretrained(models, device=device, dtype=DTYPES[dtype])
    if channels_last:
        mt.unet.to(memory_format=torch.channels_last)
        mt.vae.to(memory_format=torch.channels_last)
    if compile_unet:
        mt.unet = torch.compile(mt.unet, mode="max-autotune-no-cudagraphs")
        mt.vae.decoder = torch.compile(mt.vae.decoder)
    return mt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--models", help="real models folder (default: random weights of --size)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtypes", nargs="+", default=["float32"], choices=list(DTYPES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4, 8, 16, 32, 64])
    parser.add_argument("--frames", type=int, default=64, help="frames per timed pass")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet and VAE decoder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    models = args.models or write_random_models(tempfile.mkdtemp(prefix="bench-models-"), size=args.size, versions=("v1.5",))
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (args.frames, 256, 256, 3), dtype=np.uint8)
    prompts = rng.standard_normal((args.frames, 50, 384)).astype(np.float32)

    baseline_model = load(models, args.device, "float32", False, False)
    latents = baseline_model.unet_input(crops, crops)
    baseline = frames_per_second(baseline_model, latents, prompts, 1, args.repeats)
    del baseline_model
    print(f"# {args.size} models on {args.device} ({torch.get_num_threads()} CPU threads); "
          f"baseline per-frame float32 loop: {baseline:.3f} frames/s ({1 / baseline:.3f} s/frame)")
    print("| dtype | batch | frames/s | s/frame | x baseline |")
    print("|---|---|---|---|---|")
    for dtype in args.dtypes:
        mt = load(models, args.device, dtype, args.channels_last, args.compile)
        cast = latents.to(mt.device, DTYPES[dtype])
        for batch in args.batches:
            if batch > args.frames:
                continue
            fps = frames_per_second(mt, cast, prompts, batch, args.repeats)
            print(f"| {dtype} | {batch} | {fps:.3f} | {1 / fps:.4f} | {fps / baseline:.2f} |", flush=True)
        del mt


if __name__ == "__main__":
    main()
