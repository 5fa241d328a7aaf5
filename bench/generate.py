"""Frames per second of the one-step generation (UNet + latent decoder; latents of the crops cached), per
dtype, decoder, execution mode and batch size, with peak GPU memory and the ratio to a plain per-frame
float32 loop measured in the same run; optionally the decode time of the VAE against the tiny decoder.

    python bench/generate.py --size tiny                       # CPU, tiny random models (seconds)
    python bench/generate.py --size full --batches 1 --frames 2 --decode-ratio
    python bench/generate.py --size full --device cuda --dtypes float16 bfloat16 --decoders vae tiny \\
        --modes eager compile cudagraphs --batches 8 32 --json gen.json
Models are random weights in the official layout (timing equals the real weights); ``--models DIR`` uses real
ones. A failing configuration is reported in its row and the others still run (``--budget-s`` skips the rest).
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from musetalk import MuseTalk
from musetalk.models.decoder import LatentDecoder, load_tiny_decoder
from musetalk.models.layout import model_paths
from musetalk.models.random_init import write_random_models
from musetalk.pipeline.acceleration import DTYPES, Acceleration
from musetalk.video import atomic_output

log = logging.getLogger("bench.generate")
MODES = {"eager": "off", "compile": "compile", "cudagraphs": "cudagraphs"}


@dataclass
class Row:
    dtype: str
    decoder: str
    mode: str
    batch: int
    frames_per_second: float | None = None
    warmup_seconds: float | None = None
    peak_gpu_mib: float | None = None
    error: str | None = None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def frames_per_second(mt: MuseTalk, latents: torch.Tensor, prompts: np.ndarray, batch: int, repeats: int) -> float:
    """Best of ``repeats`` passes over all frames in batches of ``batch``, two batches in flight."""
    best = float("inf")
    for _ in range(repeats):
        sync(mt.device)
        start = time.perf_counter()
        pending = None
        for i in range(0, len(latents), batch):
            launched = mt.launch(latents[i : i + batch], prompts[i : i + batch])
            if pending is not None:
                pending.result()
            pending = launched
        pending.result()
        best = min(best, time.perf_counter() - start)
    return len(latents) / best


def measure(base: MuseTalk, decoder: LatentDecoder, row: Row, latents: torch.Tensor, prompts: np.ndarray,
            repeats: int) -> None:
    """Fill ``row``'s timings: a warm-up batch (compiles), then the timed passes."""
    accel = Acceleration(static_batch=row.batch, compile=MODES[row.mode])
    mt = MuseTalk(base.unet, base.vae, base.whisper, base.feature_extractor, base.device, base.dtype,
                  decoder=decoder, accel=accel)
    if base.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(base.device)
    start = time.perf_counter()
    mt.generate_latents(latents[: row.batch], prompts[: row.batch])
    row.warmup_seconds = round(time.perf_counter() - start, 3)
    row.frames_per_second = round(frames_per_second(mt, latents, prompts, row.batch, repeats), 3)
    if base.device.type == "cuda":
        row.peak_gpu_mib = round(torch.cuda.max_memory_allocated(base.device) / 2**20, 1)


def decode_seconds(decoder: LatentDecoder, latents: torch.Tensor, repeats: int) -> float:
    """Best wall time of one ``to_images`` call on ``latents``."""
    best = float("inf")
    with torch.inference_mode():
        decoder.to_images(latents)
        for _ in range(repeats):
            sync(latents.device)
            start = time.perf_counter()
            decoder.to_images(latents)
            sync(latents.device)
            best = min(best, time.perf_counter() - start)
    return best


def decode_ratio(base: MuseTalk, tiny: LatentDecoder, latents: torch.Tensor, repeats: int) -> dict[str, float]:
    """Seconds per frame of the VAE and the tiny decoder on the same latents, and their ratio."""
    predicted = latents[:, :4].to(base.dtype)
    vae_s = decode_seconds(base.decoder, predicted, repeats) / len(predicted)
    tiny_s = decode_seconds(tiny, predicted, repeats) / len(predicted)
    return {"vae_s_per_frame": round(vae_s, 5), "tiny_s_per_frame": round(tiny_s, 5),
            "vae_over_tiny": round(vae_s / tiny_s, 2)}


def baseline_fps(models: Path, device: str, latents: torch.Tensor, prompts: np.ndarray, repeats: int) -> float:
    """The plain loop: float32, eager, VAE decoder, one frame per call."""
    mt = MuseTalk.from_pretrained(models, device=device, dtype=torch.float32, accel=Acceleration(channels_last=False))
    mt.generate_latents(latents[:1], prompts[:1])
    return frames_per_second(mt, latents.to(mt.device), prompts, 1, repeats)


def run(args: argparse.Namespace) -> dict:
    models = Path(args.models or write_random_models(tempfile.mkdtemp(prefix="bench-models-"), size=args.size,
                                                       versions=("v1.5",)))
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (args.frames, 256, 256, 3), dtype=np.uint8)
    prompts = rng.standard_normal((args.frames, 50, 384)).astype(np.float32)
    report: dict = {"device": args.device, "size": args.size, "frames": args.frames, "rows": []}
    started = time.perf_counter()
    for dtype in args.dtypes:
        base = MuseTalk.from_pretrained(models, device=args.device, dtype=DTYPES[dtype])
        latents = base.unet_input(crops, crops)
        decoders = {"vae": base.decoder}
        if "tiny" in args.decoders or args.decode_ratio:
            decoders["tiny"] = load_tiny_decoder(model_paths(models, "v1.5").require_taesd(), base.device, base.dtype)
        if args.decode_ratio and "decode" not in report:
            report["decode"] = decode_ratio(base, decoders["tiny"], latents[: args.batches[0]], args.repeats)
            log.warning("decode, %s %s: %s", args.device, dtype, report["decode"])
        for decoder in args.decoders:
            for mode in args.modes:
                for batch in args.batches:
                    row = Row(dtype, decoder, mode, batch)
                    report["rows"].append(row)
                    if time.perf_counter() - started > args.budget_s:
                        row.error = "skipped: time budget spent"
                        continue
                    try:
                        measure(base, decoders[decoder], row, latents, prompts, args.repeats)
                    except Exception as exc:  # reported in the row: one configuration fails, the rest run
                        log.error("generate %s failed", row, exc_info=True)
                        row.error = f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                        if base.device.type == "cuda":
                            torch.cuda.empty_cache()
                    log.warning("generate: %s", row)
        del base, decoders
    if args.baseline:
        report["baseline_fps"] = round(baseline_fps(models, args.device, latents, prompts, args.repeats), 4)
    report["rows"] = [asdict(r) for r in report["rows"]]
    return report


def print_report(report: dict) -> None:
    base = report.get("baseline_fps")
    print(f"# generate: {report['size']} models on {report['device']} ({torch.get_num_threads()} CPU threads)"
          + (f"; per-frame float32 loop {base:.3f} frames/s" if base else ""))
    if "decode" in report:
        d = report["decode"]
        print(f"# decode per frame: VAE {d['vae_s_per_frame']:.4f} s, tiny {d['tiny_s_per_frame']:.4f} s: "
              f"VAE/tiny = {d['vae_over_tiny']:.1f}x")
    print("| dtype | decoder | mode | batch | frames/s | x baseline | warm-up s | peak GPU MiB | error |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in report["rows"]:
        fps = r["frames_per_second"]
        ratio = f"{fps / base:.1f}" if fps and base else ""
        print(f"| {r['dtype']} | {r['decoder']} | {r['mode']} | {r['batch']} | {fps or ''} | {ratio} | "
              f"{r['warmup_seconds'] or ''} | {r['peak_gpu_mib'] or ''} | {r['error'] or ''} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--models", help="real models folder (default: random weights of --size)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtypes", nargs="+", default=["float32"], choices=list(DTYPES))
    parser.add_argument("--decoders", nargs="+", default=["vae"], choices=("vae", "tiny"))
    parser.add_argument("--modes", nargs="+", default=["eager"], choices=list(MODES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4, 8, 16, 32, 64])
    parser.add_argument("--frames", type=int, default=64, help="frames per timed pass")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="skip the per-frame float32 loop")
    parser.add_argument("--decode-ratio", action="store_true",
                        help="also time the VAE and the tiny decoder alone on a batch of the first --batches size")
    parser.add_argument("--budget-s", type=float, default=float("inf"), help="start no configuration after this")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    args.batches = [b for b in args.batches if b <= args.frames]
    report = run(args)
    print_report(report)
    if args.json:
        with atomic_output(args.json) as tmp:
            tmp.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
