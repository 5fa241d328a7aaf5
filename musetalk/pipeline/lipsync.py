"""``MuseTalk``: audio features and one-step generation of the lower face, the API everything builds on.

    mt = MuseTalk.from_pretrained(models_dir=None, version="v1.5", device="cpu", decoder="vae")
    feats = mt.audio_features("speech.wav", fps=25)   # float32 (T, 50, 384), before positional encoding
    faces = mt.generate(crops, feats)                  # uint8 (N, 256, 256, 3) RGB -> same shape/dtype/order
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from ..audio.features import frame_windows, whisper_hidden_states
from ..audio.load import load_audio
from ..errors import MuseTalkError
from ..models.layout import model_paths
from ..models.decoder import DECODERS, LatentDecoder, images_to_uint8, load_tiny_decoder, vae_decoder
from ..models.positional import add_positional_encoding
from ..models.unet import load_unet
from ..models.vae import CROP_SIZE, crops_to_tensor, encode, load_vae
from ..models.whisper import load_whisper
from .acceleration import Acceleration, HostRing, HostSlot, pad_batch
from .timing import DeviceBusy

log = logging.getLogger(__name__)

CROP_SHAPE = (CROP_SIZE, CROP_SIZE, 3)
PROMPT_SHAPE = (50, 384)


def _check_crops(crops: np.ndarray, name: str) -> np.ndarray:
    crops = np.asarray(crops)
    if crops.ndim == 3:
        crops = crops[None]
    if crops.dtype != np.uint8 or crops.shape[1:] != CROP_SHAPE:
        raise MuseTalkError(f"{name} must be uint8 (N, 256, 256, 3) RGB, got {crops.dtype} {crops.shape}")
    return crops


class LatentCache:
    """Bounded LRU of VAE latents keyed by crop content: a crop seen again (ping-pong frames, a reference
    reused for many frames) is encoded once. Values are (4, 32, 32) tensors on the model device; the default
    capacity holds 2048 crops (masked + reference), 64 MB in float32."""

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._items: OrderedDict[bytes, torch.Tensor] = OrderedDict()

    @staticmethod
    def key(crop: np.ndarray, masked: bool) -> bytes:
        return hashlib.blake2b(crop.tobytes(), digest_size=16, person=b"m" if masked else b"r").digest()

    def get(self, key: bytes) -> torch.Tensor | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: bytes, value: torch.Tensor) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class PendingFaces:
    """The faces of one launched batch on their way to the host; :meth:`result` waits for them."""

    slot: HostSlot
    count: int

    def result(self) -> np.ndarray:
        """uint8 (count, 256, 256, 3) RGB."""
        return self.slot.faces_ready(self.count)


@dataclass
class MuseTalk:
    """Frozen VAE (encoder; decoder unless ``decoder`` says otherwise) + whisper encoder + MuseTalk UNet
    on one device and dtype, run as ``accel`` says."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    whisper: torch.nn.Module
    feature_extractor: object
    device: torch.device
    dtype: torch.dtype
    version: str = "v1.5"
    cache: LatentCache = field(default_factory=LatentCache)
    decoder: LatentDecoder | None = None
    accel: Acceleration = field(default_factory=Acceleration)

    def __post_init__(self) -> None:
        self.decoder = self.decoder or vae_decoder(self.vae)
        self.busy = DeviceBusy(self.device)
        self._ring = HostRing(PROMPT_SHAPE, CROP_SHAPE, self.device)
        if self.accel.uses_channels_last(self.device):
            self.unet.to(memory_format=torch.channels_last)
            self.decoder.network.to(memory_format=torch.channels_last)
        self._forward = self._render
        if self.accel.compile != "off":
            self._forward = torch.compile(self._render, mode=self.accel.torch_compile_mode, dynamic=False)

    @classmethod
    def from_pretrained(
        cls,
        models_dir: str | os.PathLike | None = None,
        version: str = "v1.5",
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        decoder: str = "vae",
        accel: Acceleration | None = None,
    ) -> "MuseTalk":
        """Load the official files from ``models_dir`` (default ``$MUSETALK_MODELS`` or ``./models``).

        dtype: ``resolve_dtype("auto", device)`` gives the fast default (float16 on CUDA, what ``dub`` uses).
        decoder: "vae" (sd-vae, the official output) or
        "tiny" (TAESD from ``taesd/``, much faster, softer detail). accel: see :class:`Acceleration`.
        """
        if decoder not in DECODERS:
            raise MuseTalkError(f"unknown decoder {decoder!r}: choose one of {', '.join(DECODERS)}")
        paths = model_paths(models_dir, version).require()
        taesd_dir = paths.require_taesd() if decoder == "tiny" else None
        device = torch.device(device)
        if device.type == "cpu" and dtype != torch.float32:
            log.warning("%s on CPU is emulated and very slow; float32 is recommended", dtype)
        log.info("loading MuseTalk %s from %s on %s (%s, %s decoder)", version, paths.root, device, dtype, decoder)
        unet = load_unet(paths.unet_config, paths.unet_weights, device, dtype)
        vae = load_vae(paths.vae_dir, device, dtype)
        latent_decoder = load_tiny_decoder(taesd_dir, device, dtype) if taesd_dir else vae_decoder(vae)
        whisper, extractor = load_whisper(paths.whisper_dir, device, dtype)
        return cls(unet, vae, whisper, extractor, device, dtype, version, decoder=latent_decoder,
                   accel=accel or Acceleration())

    def audio_features(self, audio: str | os.PathLike | np.ndarray, fps: float = 25.0) -> np.ndarray:
        """Speech (a file, or float samples at 16 kHz) -> float32 (T, 50, 384), T = floor(seconds x fps).

        Prompts before the positional encoding; ``generate`` adds it.
        """
        samples = load_audio(audio)
        return self.features_from_samples(samples, fps)

    def features_from_samples(self, samples: np.ndarray, fps: float) -> np.ndarray:
        """16 kHz mono float32 (N,) -> float32 (floor(N / 16000 x fps), 50, 384)."""
        states = whisper_hidden_states(self.whisper, self.feature_extractor, samples, self.device, self.dtype)
        return frame_windows(states, len(samples), fps)

    def encode_crops(self, crops: np.ndarray, masked: bool) -> torch.Tensor:
        """uint8 (N, 256, 256, 3) RGB -> latents (N, 4, 32, 32) on the model device, via the cache."""
        keys = [LatentCache.key(c, masked) for c in crops]
        found = [self.cache.get(k) for k in keys]
        todo = [i for i, v in enumerate(found) if v is None]
        if todo:
            fresh = encode(self.vae, crops_to_tensor(crops[todo], masked=masked, device=self.device))
            for i, latent in zip(todo, fresh):
                self.cache.put(keys[i], latent)
                found[i] = latent
        return torch.stack(found)

    def unet_input(self, crops: np.ndarray, references: np.ndarray) -> torch.Tensor:
        """(N, 8, 32, 32): masked-crop latents then reference latents along channels."""
        return torch.cat([self.encode_crops(crops, masked=True), self.encode_crops(references, masked=False)], dim=1)

    def _render(self, latents: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        """UNet input (B, 8, 32, 32) + encoded prompts (B, 50, 384) -> uint8 faces (B, 256, 256, 3) on the device."""
        timestep = torch.zeros((), device=latents.device, dtype=torch.long)
        predicted = self.unet(latents, timestep, encoder_hidden_states=prompts).sample
        return images_to_uint8(self.decoder.to_images(predicted))

    @torch.inference_mode()
    def launch(self, latents: torch.Tensor, prompts: np.ndarray | torch.Tensor) -> PendingFaces:
        """Queue one step on the device without waiting: UNet input (B, 8, 32, 32) and prompts
        float32 (B, 50, 384) -> :class:`PendingFaces`. Up to two batches may be in flight at once."""
        if isinstance(prompts, torch.Tensor):
            prompts = prompts.detach().to("cpu", torch.float32).numpy()
        count = len(latents)
        rows = self.accel.batch_rows(count)
        slot = self._ring.next(rows)
        with self.busy():
            encoded = add_positional_encoding(slot.upload_prompts(prompts, self.device, self.dtype))
            latents = latents.to(device=self.device, dtype=self.dtype)
            if rows > count:
                latents, encoded = pad_batch(latents, rows), pad_batch(encoded, rows)
            if self.accel.uses_channels_last(self.device):
                latents = latents.contiguous(memory_format=torch.channels_last)
            if self.accel.compile == "cudagraphs":
                torch.compiler.cudagraph_mark_step_begin()
            slot.download_faces(self._forward(latents, encoded), count)
        return PendingFaces(slot, count)

    def generate_latents(self, latents: torch.Tensor, prompts: np.ndarray | torch.Tensor) -> np.ndarray:
        """One step: UNet input (B, 8, 32, 32) and prompts (B, 50, 384) -> uint8 faces (B, 256, 256, 3) RGB."""
        faces = self.launch(latents, prompts).result()
        self.busy.mark_done()
        return faces

    def generate(
        self,
        crops: np.ndarray,
        features: np.ndarray,
        references: np.ndarray | None = None,
        batch_size: int = 8,
        progress: bool = False,
    ) -> np.ndarray:
        """Re-render the lower half of each face crop to follow its audio prompt.

        crops, references: uint8 (N, 256, 256, 3) RGB (references default to the crops, as officially);
        features: float32 (N, 50, 384) from :meth:`audio_features`. Returns uint8 (N, 256, 256, 3) RGB.
        """
        crops = _check_crops(crops, "crops")
        references = crops if references is None else _check_crops(references, "references")
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 3 or len(features) != len(crops) or len(references) != len(crops):
            raise MuseTalkError(
                f"need one audio prompt and one reference per crop: {len(crops)} crops, "
                f"{len(references)} references, features of shape {features.shape}"
            )
        if batch_size < 1:
            raise MuseTalkError(f"batch_size must be at least 1, got {batch_size}")
        out = np.empty_like(crops)
        for start in tqdm(range(0, len(crops), batch_size), disable=not progress, desc="generate", unit="batch"):
            stop = start + batch_size
            latents = self.unet_input(crops[start:stop], references[start:stop])
            out[start:stop] = self.generate_latents(latents, features[start:stop])
        return out
