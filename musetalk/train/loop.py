"""The two-stage training loop on Hugging Face Accelerate.

One code path for CPU, one GPU, multi-GPU DDP and multi-node (``accelerate launch -m musetalk.cli.main
train stage2 ...``), mixed precision, gradient accumulation and checkpointing. The UNet is trained; the
VAE (encoder for the inputs, decoder inside the graph: every loss is on decoded pixels), the SyncNet and
the VGG are frozen; whisper ran once at data preparation. Audio prompts get the positional encoding, as
at inference. Checkpoints (``output_dir/checkpoints/checkpoint-<step>``) hold models, optimisers,
schedulers, RNG states and the data position, so a resumed run continues bit for bit. The result is
exported to the official layout ``output_dir/models/musetalkV15/{unet.pth,musetalk.json}`` beside links
to the frozen ``sd-vae`` and ``whisper``, a folder ``MuseTalk.from_pretrained`` and ``musetalk dub`` load.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers import UNet2DConditionModel
from diffusers.optimization import get_scheduler
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..models.checkpoint import load_checked
from ..models.discriminator import MultiScaleDiscriminator
from ..models.layout import LATENTSYNC_SYNCNET_FILE, VGG19_FILE, model_paths, resolve_models_dir
from ..models.positional import add_positional_encoding
from ..models.syncnet_latentsync import SyncNetConfig, load_latentsync_syncnet
from ..models.unet import build_unet, read_unet_config
from ..models.vae import encode, load_vae, mask_lower_half
from ..models.vgg19 import load_vgg19
from . import losses as L
from .config import Config, ConfigError
from .dataset import SYNC_FRAMES, EpochBatchSampler, FrameWindows
from .shards import open_shards

log = logging.getLogger(__name__)

EXPORT_FOLDER = "musetalkV15"


@dataclass
class DataPosition:
    """Batches consumed so far (checkpointed with the models, restores the sampler on resume)."""

    consumed: int = 0

    def state_dict(self) -> dict:
        return {"consumed": self.consumed}

    def load_state_dict(self, state: dict) -> None:
        self.consumed = int(state["consumed"])


def initial_unet(cfg: Config) -> tuple[UNet2DConditionModel, dict]:
    """The UNet to train and its config: ``init_unet`` weights (stage 2, fine-tuning) or random init."""
    if cfg.init_unet:
        folder = Path(cfg.init_unet)
        config = read_unet_config(folder / "musetalk.json")
        paths = [folder / n for n in ("unet.pth", "unet.safetensors", "pytorch_model.bin")]
        weights = next((p for p in paths if p.is_file()), paths[0])
        unet = load_checked(build_unet(config, empty=True), weights)
    else:
        config_path = Path(cfg.unet_config) if cfg.unet_config else model_paths(cfg.models_dir, "v1.5").unet_config
        config = read_unet_config(config_path)
        unet = build_unet(config)
    return unet.float().requires_grad_(True).train(), config


def aux_weights(cfg: Config, given: str | None, default: str, key: str, role: str) -> Path | None:
    """Weights of a frozen auxiliary network: the configured file, else ``<models_dir>/<default>``. Missing,
    they are refused unless ``allow_random_aux`` (then None: random weights, for smoke runs)."""
    path = Path(given) if given else resolve_models_dir(cfg.models_dir) / default
    if path.is_file():
        return path
    if cfg.allow_random_aux:
        log.warning("%s not found: %s uses random weights (allow_random_aux, smoke runs only)", path, role)
        return None
    raise ConfigError(f"{role} needs its weights: {path} not found; run `musetalk download --train --models "
                      f"{resolve_models_dir(cfg.models_dir)}`, set {key}, or pass --allow-random-aux for a smoke run")


class Trainer:
    """Builds everything from a stage config and runs :meth:`train`."""

    def __init__(self, cfg: Config, progress: bool = True) -> None:
        self.cfg, self.progress = cfg, progress
        self._check(cfg)
        self.output = Path(cfg.output_dir)
        self.accelerator = Accelerator(
            gradient_accumulation_steps=int(cfg.solver.gradient_accumulation_steps),
            mixed_precision=cfg.solver.mixed_precision,
            log_with="tensorboard",
            project_dir=str(self.output),
        )
        set_seed(int(cfg.seed), device_specific=True)
        device = self.accelerator.device
        self.vae = load_vae(resolve_models_dir(cfg.models_dir) / "sd-vae", device, torch.float32)
        self.unet, self.unet_config = initial_unet(cfg)
        if cfg.solver.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        self.vgg_loss = self._perceptual(device)
        self.syncnet = self._syncnet(device)
        self.gan = self._gan(cfg.loss.gan)
        self.mouth_gan = self._gan(cfg.loss.mouth_gan)
        self.dataset = FrameWindows(
            open_shards(cfg.data_dir), int(cfg.data.n_sample_frames), cfg.data.sample_method, float(cfg.data.top_k_ratio),
            int(cfg.data.min_gap), float(cfg.data.min_face_size), float(cfg.data.holdout_fraction),
            int(cfg.loss.mouth_padding), int(cfg.seed), int(cfg.data.image_size))
        self.position = DataPosition()
        self._prepare()

    @staticmethod
    def _check(cfg: Config) -> None:
        needs_sync = cfg.loss.sync > 0 or cfg.adapted_weight.mode != "off"
        if needs_sync and int(cfg.data.n_sample_frames) != SYNC_FRAMES:
            raise ConfigError(f"loss.sync and adapted_weight need data.n_sample_frames={SYNC_FRAMES} (the SyncNet sees "
                              f"16 frames), got {cfg.data.n_sample_frames}")
        if cfg.adapted_weight.mode not in ("off", "cut_off", "linear"):
            raise ConfigError(f"adapted_weight.mode must be off, cut_off or linear, got {cfg.adapted_weight.mode!r}")
        if cfg.solver.mixed_precision not in ("no", "fp16", "bf16"):
            raise ConfigError(f"solver.mixed_precision must be no, fp16 or bf16, got {cfg.solver.mixed_precision!r}")

    def _perceptual(self, device: torch.device) -> L.PerceptualLoss | None:
        loss = self.cfg.loss
        if loss.vgg <= 0:
            return None
        weights = aux_weights(self.cfg, loss.vgg_weights, VGG19_FILE, "loss.vgg_weights", "the perceptual loss (VGG-19)")
        vgg = load_vgg19(weights, int(loss.vgg_width_divisor))
        return L.PerceptualLoss(vgg, tuple(loss.pyramid_scales), tuple(loss.vgg_layer_weights), int(loss.resize_to)).to(device)

    def _syncnet(self, device: torch.device):
        cfg = self.cfg
        if cfg.loss.sync <= 0 and cfg.adapted_weight.mode == "off":
            return None
        weights = aux_weights(cfg, cfg.syncnet.weights, LATENTSYNC_SYNCNET_FILE, "syncnet.weights",
                              "the sync loss (SyncNet)")
        config = SyncNetConfig.from_dict(cfg.syncnet.config) if cfg.syncnet.config else None
        return load_latentsync_syncnet(weights, config).to(device)

    def _gan(self, weight: float) -> L.GanLosses | None:
        if weight <= 0:
            return None
        d = self.cfg.discriminator
        disc = MultiScaleDiscriminator(tuple(d.scales), block_expansion=int(d.block_expansion), num_blocks=int(d.num_blocks),
                                       max_features=int(d.max_features), spectral_norm=bool(d.spectral_norm))
        return L.GanLosses(disc, int(self.cfg.loss.resize_to)).train()

    def _prepare(self) -> None:
        """Optimisers and schedulers, everything through ``accelerator.prepare``, the data position registered."""
        acc, s, d = self.accelerator, self.cfg.solver, self.cfg.discriminator
        n = acc.num_processes
        opt = torch.optim.AdamW(self.unet.parameters(), lr=float(s.learning_rate), betas=tuple(s.betas),
                                weight_decay=float(s.weight_decay), eps=float(s.eps))
        sched = get_scheduler(s.lr_scheduler, opt, num_warmup_steps=int(s.lr_warmup_steps) * n,
                              num_training_steps=int(s.max_train_steps) * n)
        self.unet, self.optimizer, self.scheduler = acc.prepare(self.unet, opt, sched)
        self.d_parts = {}
        for name in ("gan", "mouth_gan"):
            module = getattr(self, name)
            if module is None:
                continue
            d_opt = torch.optim.AdamW(module.parameters(), lr=float(d.learning_rate), betas=tuple(d.betas),
                                      weight_decay=float(d.weight_decay), eps=float(d.eps))
            d_sched = torch.optim.lr_scheduler.CosineAnnealingLR(d_opt, T_max=int(s.max_train_steps) * n,
                                                                 eta_min=min(1e-6, float(d.learning_rate)))
            self.d_parts[name] = acc.prepare(module, d_opt, d_sched)
        acc.register_for_checkpointing(self.position)

    # ----------------------------------------------------------------------------------------- one step
    def predict(self, target: torch.Tensor, reference: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, 256, 256), references, prompts (N, 50, 384) -> decoded predictions (N, 3, 256, 256)
        in [-1, 1], differentiable w.r.t. the UNet (through the frozen decoder)."""
        latents = torch.cat([encode(self.vae, mask_lower_half(target)), encode(self.vae, reference)], dim=1)
        prompts = add_positional_encoding(prompts)
        timestep = torch.zeros((), dtype=torch.long, device=latents.device)
        predicted = self.unet(latents, timestep, encoder_hidden_states=prompts).sample
        return self.vae.decode(predicted.float() / self.vae.config.scaling_factor).sample.float()

    def loss_weights(self, step: int) -> dict[str, float]:
        """Weights of every loss term at optimizer ``step`` (GAN terms start at ``gan_start_step``)."""
        loss = self.cfg.loss
        gan_on = float(step >= int(loss.gan_start_step))
        sched = loss.sync_schedule
        return {"l1": float(loss.l1), "vgg": float(loss.vgg) if self.vgg_loss else 0.0,
                "gan": float(loss.gan) * gan_on, "mouth_gan": float(loss.mouth_gan) * gan_on,
                "sync": L.sync_weight_at(step, float(loss.sync), int(sched["start_step"]), int(sched["ramp_steps"]))}

    def micro_step(self, batch: dict, step: int) -> dict[str, float]:
        """Forward and backward of one micro-batch (generator, then discriminators); returns loss values."""
        acc, cfg = self.accelerator, self.cfg
        device = acc.device
        b = batch["target"].shape[0]
        target = batch["target"].to(device).flatten(0, 1)
        reference = batch["reference"].to(device).flatten(0, 1)
        prompts = batch["prompts"].to(device).flatten(0, 1)
        weights = self.loss_weights(step)
        audio_embed, sample_weight = None, torch.ones(b, device=device)
        if self.syncnet is not None:
            with torch.no_grad():
                audio_embed = self.syncnet.embed_audio(batch["mel"].to(device))
                if cfg.adapted_weight.mode != "off":
                    gt_sim = (audio_embed * self.syncnet.embed_frames(L.sync_frames(target, b))).sum(dim=1)
                    sample_weight = L.adapted_weight(gt_sim, cfg.adapted_weight.mode, float(cfg.adapted_weight.low),
                                                     float(cfg.adapted_weight.high))
        with acc.autocast():
            pred = self.predict(target, reference, prompts)
            terms = {"l1": L.per_sample(L.l1_per_image(pred, target), b)}
            if weights["vgg"] > 0:
                terms["vgg"] = L.per_sample(self.vgg_loss(pred, target), b)
            fm = tuple(cfg.loss.fm)
            mouths = None
            if weights["gan"] > 0:
                adv, feat = acc.unwrap_model(self.d_parts["gan"][0]).generator(pred, target, fm)
                terms["gan"], terms["fm"] = L.per_sample(adv, b), L.per_sample(feat, b)
            if weights["mouth_gan"] > 0:
                size, boxes = int(cfg.loss.resize_to), batch["mouth_box"].flatten(0, 1)
                mouths = (L.crop_mouths(pred, boxes, size), L.crop_mouths(target, boxes, size))
                adv, feat = acc.unwrap_model(self.d_parts["mouth_gan"][0]).generator(*mouths, fm)
                terms["mouth_gan"], terms["mouth_fm"] = L.per_sample(adv, b), L.per_sample(feat, b)
            if weights["sync"] > 0:
                terms["sync"], sim = L.sync_loss(self.syncnet, audio_embed, L.sync_frames(pred, b))
            factor = {"l1": weights["l1"], "vgg": weights["vgg"], "gan": weights["gan"], "fm": weights["gan"],
                      "mouth_gan": weights["mouth_gan"], "mouth_fm": weights["mouth_gan"], "sync": weights["sync"]}
            image = sum(factor[k] * v for k, v in terms.items() if k != "sync")
            sync = factor["sync"] * terms["sync"] if "sync" in terms else torch.zeros_like(image)
            total = (sample_weight * (image + sync)).mean()
        acc.backward(total)
        if acc.sync_gradients:
            acc.clip_grad_norm_(self.unet.parameters(), float(cfg.solver.max_grad_norm))
        out = {f"loss/{k}": float(v.detach().mean()) for k, v in terms.items()}
        out |= {"loss/total": float(total.detach()), "tradeoff/image": float(image.detach().mean()),
                "tradeoff/sync": float(sync.detach().mean()),
                "weight/sync": weights["sync"], "weight/adapted": float(sample_weight.mean())}
        if "sync" in terms:
            out["sync/similarity_pred"] = float(sim.detach().mean())
        out |= self._discriminator_steps(pred, target, mouths, sample_weight, weights, b)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return out

    def _discriminator_steps(self, pred, target, mouths, sample_weight, weights, b) -> dict[str, float]:
        out = {}
        pairs = {"gan": (pred, target), "mouth_gan": mouths}
        for name, (module, opt, sched) in self.d_parts.items():
            if weights[name] <= 0:
                continue
            with self.accelerator.autocast():
                loss_d = (sample_weight * L.per_sample(module(*pairs[name]), b)).mean()
            self.accelerator.backward(loss_d)
            if self.accelerator.sync_gradients:
                self.accelerator.clip_grad_norm_(module.parameters(), float(self.cfg.solver.max_grad_norm))
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            out[f"loss/D_{name}"] = float(loss_d.detach())
        return out

    # ----------------------------------------------------------------------------------------- the run
    def checkpoints(self) -> list[Path]:
        folder = self.output / "checkpoints"
        found = [p for p in folder.glob("checkpoint-*") if p.is_dir()] if folder.is_dir() else []
        return sorted(found, key=lambda p: int(p.name.split("-")[1]))

    def resume(self) -> int:
        """Load the latest checkpoint if there is one; returns the optimizer step to continue from."""
        found = self.checkpoints()
        if not found:
            return 0
        self.accelerator.load_state(str(found[-1]))
        log.info("resumed from %s (%d batches consumed)", found[-1], self.position.consumed)
        return int(found[-1].name.split("-")[1])

    def save_checkpoint(self, step: int) -> Path:
        path = self.output / "checkpoints" / f"checkpoint-{step}"
        self.accelerator.save_state(str(path))
        if self.accelerator.is_main_process:
            for old in self.checkpoints()[: -int(self.cfg.keep_checkpoints)]:
                shutil.rmtree(old, ignore_errors=True)
        return path

    def loader(self) -> DataLoader:
        acc, data = self.accelerator, self.cfg.data
        sampler = EpochBatchSampler(len(self.dataset), int(data.batch_size), int(self.cfg.seed), acc.process_index, acc.num_processes)
        sampler.epoch, sampler.batch = sampler.position(self.position.consumed)
        workers = int(data.num_workers)
        return DataLoader(self.dataset, batch_sampler=sampler, num_workers=workers, pin_memory=acc.device.type == "cuda",
                          persistent_workers=False, prefetch_factor=2 if workers else None)

    def train(self, max_steps: int | None = None, stop_after: int | None = None) -> Path:
        """Train to ``solver.max_train_steps`` (or ``max_steps``), resuming when checkpoints exist.
        ``stop_after`` ends the run early (checkpointed) after that many optimizer steps. Returns the export folder."""
        acc, cfg = self.accelerator, self.cfg
        total = int(max_steps or cfg.solver.max_train_steps)
        step = self.resume()
        if acc.is_main_process:
            acc.init_trackers("tensorboard", config=_flat(cfg.to_dict()))
        self.unet.train()
        bar = tqdm(total=total, initial=step, desc=f"stage {cfg.stage}", unit="step",
                   disable=not (self.progress and acc.is_local_main_process))
        sums: dict[str, list[float]] = defaultdict(list)
        stop = total if stop_after is None else min(total, step + stop_after)
        if step == 0:
            self.validate(0)  # where the run starts from, before the first update
        for batch in self.loader() if step < stop else ():
            with acc.accumulate(self.unet, *(parts[0] for parts in self.d_parts.values())):
                for key, value in self.micro_step(batch, step).items():
                    sums[key].append(value)
            if not acc.sync_gradients:
                continue
            step += 1
            self.position.consumed = int(batch["batch"][-1]) + 1
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(sums['loss/total']):.4f}")
            if step % int(cfg.log_steps) == 0 or step == stop:
                acc.log({k: float(np.mean(v)) for k, v in sums.items()} | {"lr": self.scheduler.get_last_lr()[0]}, step=step)
                sums.clear()
            if step % int(cfg.checkpointing_steps) == 0 or step == stop:
                self.save_checkpoint(step)
            if step % int(cfg.validation_steps) == 0 or step == stop:
                self.validate(step)
            if step >= stop:
                break
        bar.close()
        acc.wait_for_everyone()
        out = self.export() if acc.is_main_process else self.output / "models"
        acc.end_training()
        return out

    # ----------------------------------------------------------------------------------------- validation
    @torch.no_grad()
    def holdout_predictions(self, clip: int = 0, limit: int | None = None,
                            batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
        """(predictions, targets) float (F, 3, S, S) in [-1, 1] for the first ``limit`` held-out frames of
        clip number ``clip``."""
        sample = self.dataset.holdout(clip, limit)
        preds = []
        was_training = self.unet.training
        self.unet.eval()
        device = self.accelerator.device
        for i in range(0, len(sample["target"]), batch_size):
            chunk = slice(i, i + batch_size)
            with self.accelerator.autocast():
                preds.append(self.predict(sample["target"][chunk].to(device), sample["reference"][chunk].to(device),
                                          sample["prompts"][chunk].to(device)).float().cpu())
        self.unet.train(was_training)
        return torch.cat(preds).clamp(-1, 1), sample["target"]

    def clip_errors(self, limit: int | None = None) -> list[float]:
        """Masked-mouth (lower half) mean absolute error, 0..255 pixel units, on the first ``limit`` held-out
        frames of every clip, in clip order."""
        return [L.masked_mouth_error(*self.holdout_predictions(c, limit)) for c in range(len(self.dataset.clips))]

    def validation_error(self, limit: int | None = None) -> float:
        """The mean over clips of :meth:`clip_errors`."""
        return float(np.mean(self.clip_errors(limit)))

    def validate(self, step: int) -> float | None:
        """Log the held-out mouth error (mean over every clip, and per clip) and write
        ``validation/step_<step>.mp4`` (ground truth | prediction, first clip)."""
        if not self.accelerator.is_main_process:
            return None
        limit = int(self.cfg.validation_frames)
        errors = self.clip_errors(limit)
        error = float(np.mean(errors))
        names = [c.shard.name for c in self.dataset.clips]
        self.accelerator.log({"val/mouth_l1": error} | {f"val/mouth_l1/{n}": e for n, e in zip(names, errors)}, step=step)
        self._write_video(step, *self.holdout_predictions(0, limit))
        log.info("step %d: held-out masked-mouth L1 %.2f (0..255) over %d clips", step, error, len(errors))
        return error

    def _write_video(self, step: int, pred: torch.Tensor, target: torch.Tensor) -> Path:
        from ..video.io import VideoWriter, atomic_output

        clip = self.dataset.clips[0]
        first = int(clip.shard.frame_index[clip.holdout_rows[0]])
        audio = np.asarray(clip.shard.audio[first * 640 : (first + len(pred)) * 640], np.float32)
        to_u8 = lambda x: ((x.permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)  # noqa: E731
        frames = np.concatenate([to_u8(target), to_u8(pred)], axis=2)
        path = self.output / "validation" / f"step_{step:07d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp:
            with VideoWriter(tmp, frames.shape[2], frames.shape[1], 25, audio=audio, audio_rate=16000) as writer:
                for frame in frames:
                    writer.write(frame)
        return path

    # ----------------------------------------------------------------------------------------- export
    def export(self, root: Path | None = None) -> Path:
        """Write ``<root>/musetalkV15/{unet.pth, musetalk.json}`` and link ``sd-vae``/``whisper`` beside it.
        Returns ``root`` (default ``output_dir/models``), loadable by ``MuseTalk.from_pretrained``."""
        return export_unet(self.accelerator.unwrap_model(self.unet), self.unet_config, root or self.output / "models",
                           resolve_models_dir(self.cfg.models_dir))


def export_unet(unet: torch.nn.Module, config: dict, root: Path, base_models: Path) -> Path:
    """Official layout: plain float32 state dict with diffusers key names + the config JSON."""
    folder = root / EXPORT_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().cpu().contiguous() for k, v in unet.state_dict().items()}
    torch.save(state, folder / "unet.pth.part")
    os.replace(folder / "unet.pth.part", folder / "unet.pth")
    (folder / "musetalk.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel", **config}, indent=2))
    for name in ("sd-vae", "whisper"):
        link, source = root / name, (base_models / name).resolve()
        if not link.exists() and source.is_dir():
            try:
                link.symlink_to(source, target_is_directory=True)
            except OSError:
                shutil.copytree(source, link)
    log.info("exported the UNet to %s", folder)
    return root


def _flat(data: dict, prefix: str = "") -> dict:
    """TensorBoard hparams want flat scalars/strings."""
    out = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= _flat(value, name + ".")
        else:
            out[name] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out
