"""Training throughput and peak memory per configuration (synthetic data, random weights).

    python bench/train.py                 # tiny models on CPU (CI-sized)
    python bench/train.py --size full     # full-size UNet/VAE/SyncNet/VGG (use on a GPU)

Reports, per configuration, samples/s and frames/s of optimizer micro-steps (forward, backward, update,
discriminators) after warm-up, and peak memory (CUDA allocator peak on GPU, process max RSS on CPU).
"""
from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from musetalk.models.random_init import UNET_FULL, UNET_TINY, write_vae  # noqa: E402
from musetalk.train.config import load_config  # noqa: E402
from musetalk.train.loop import Trainer  # noqa: E402
from musetalk.train.synthetic import write_synthetic_data  # noqa: E402

log = logging.getLogger("bench.train")

TINY_SYNCNET = ("syncnet.config={audio: {in_channels: 1, block_out_channels: [8, 8, 8, 8, 8, 8, 8], "
                "downsample_factors: [[2, 1], 2, 2, 1, 2, 2, [2, 3]], norm_num_groups: 4}, "
                "visual: {in_channels: 48, block_out_channels: [8, 8, 8, 8, 8, 8, 8, 8], "
                "downsample_factors: [[1, 2], 2, 2, 2, 2, 2, 2, 2], norm_num_groups: 4}}")
STAGE2_ALL = ("loss.gan_start_step=0", "adapted_weight.mode=linear", "syncnet.weights=null",
              "solver.gradient_accumulation_steps=1")


def configurations(size: str, cuda: bool) -> list[tuple[str, int, list[str]]]:
    """(name, stage, overrides) to time."""
    if size == "tiny":
        small = ["loss.vgg_width_divisor=8", "discriminator.block_expansion=8", "discriminator.max_features=32", TINY_SYNCNET]
        return [("stage1 tiny b4", 1, ["data.batch_size=4", "solver.gradient_checkpointing=false"]),
                ("stage1 tiny b4 no-vgg", 1, ["data.batch_size=4", "loss.vgg=0", "solver.gradient_checkpointing=false"]),
                ("stage2 tiny b1x16 all losses", 2, ["data.batch_size=1", *STAGE2_ALL, *small,
                                                     "solver.gradient_checkpointing=false"])]
    configs = [("stage1 full b8 fp32 ckpt", 1, ["data.batch_size=8"]),
               ("stage1 full b32 bf16 ckpt (official batch)", 1, ["data.batch_size=32", "solver.mixed_precision=bf16"]),
               ("stage2 full b1x16 bf16 all losses ckpt", 2, ["data.batch_size=1", *STAGE2_ALL, "solver.mixed_precision=bf16"]),
               ("stage2 full b2x16 bf16 all losses ckpt (official batch)", 2,
                ["data.batch_size=2", *STAGE2_ALL, "solver.mixed_precision=bf16"])]
    return configs if cuda else configs[:1]


def write_models(root: Path, size: str) -> Path:
    """VAE weights and the UNet config (the UNet itself is random-initialised by the trainer)."""
    write_vae(root, size)
    (root / "musetalkV15").mkdir(parents=True, exist_ok=True)
    config = UNET_TINY if size == "tiny" else UNET_FULL
    (root / "musetalkV15" / "musetalk.json").write_text(json.dumps(config))
    return root


def peak_memory_mib(cuda: bool) -> float:
    if cuda:
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_config(stage: int, overrides: list[str], warmup: int, steps: int) -> dict:
    cfg = load_config(stage, overrides=overrides)
    trainer = Trainer(cfg, progress=False)
    cuda = trainer.accelerator.device.type == "cuda"
    batches = iter(trainer.loader())
    for _ in range(warmup):
        trainer.micro_step(next(batches), 0)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.micro_step(next(batches), 0)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    samples = steps * int(cfg.data.batch_size)
    frames = samples * int(cfg.data.n_sample_frames)
    result = {"samples_per_s": samples / seconds, "frames_per_s": frames / seconds, "s_per_step": seconds / steps,
              "peak_mib": peak_memory_mib(cuda), "device": str(trainer.accelerator.device)}
    del trainer
    if cuda:
        torch.cuda.empty_cache()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--only", help="run only configurations whose name contains this text")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--threads", type=int, help="torch CPU threads (1 is fastest on a busy 2-core machine)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("musetalk", "accelerate", "diffusers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        models = write_models(root / "models", args.size)
        data = write_synthetic_data(root / "data", clips=2, frames=64)
        for name, stage, extra in configurations(args.size, torch.cuda.is_available()):
            if args.only and args.only not in name:
                continue
            overrides = [f"models_dir={models}", f"data_dir={data}", f"output_dir={root / name.replace(' ', '_')}",
                         "init_unet=null", "allow_random_aux=true", "data.min_face_size=0", "data.image_size=256", *extra]
            results[name] = time_config(stage, overrides, args.warmup, args.steps)
            r = results[name]
            log.info("%-55s %7.2f samples/s %8.2f frames/s %7.2f s/step  peak %8.0f MiB  (%s, %d threads)", name,
                     r["samples_per_s"], r["frames_per_s"], r["s_per_step"], r["peak_mib"], r["device"],
                     torch.get_num_threads())
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
