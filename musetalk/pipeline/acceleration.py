"""How the models run on a device: precision, memory format, static batch shapes, compilation, and the
pinned host buffers results travel through.

On CUDA the defaults are float16 and channels_last; ``compile="compile"`` wraps the one-step forward
(UNet + decoder + quantisation) in ``torch.compile``, ``"cudagraphs"`` also captures it as a CUDA graph
(``mode="reduce-overhead"``). Compiled graphs and CUDA graphs need one input shape: ``static_batch``
pads every batch to that many frames (the padding is computed and dropped). Everything works on CPU too.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import MuseTalkError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DTYPE_CHOICES = ("auto", *DTYPES)
COMPILE_MODES = ("off", "compile", "cudagraphs")
_TORCH_COMPILE_MODES = {"compile": "default", "cudagraphs": "reduce-overhead"}


def resolve_dtype(name: str, device: str | torch.device) -> torch.dtype:
    """``auto`` is float16 on CUDA and float32 elsewhere; other names map to their torch dtype."""
    if name == "auto":
        return torch.float16 if torch.device(device).type == "cuda" else torch.float32
    if name not in DTYPES:
        raise MuseTalkError(f"unknown dtype {name!r}: choose one of {', '.join(DTYPE_CHOICES)}")
    return DTYPES[name]


@dataclass(frozen=True)
class Acceleration:
    """channels_last: None means on for CUDA, off elsewhere. static_batch: pad batches to this size (None:
    as they come; required by ``compile``). compile: one of :data:`COMPILE_MODES`."""

    channels_last: bool | None = None
    static_batch: int | None = None
    compile: str = "off"

    def __post_init__(self) -> None:
        if self.compile not in COMPILE_MODES:
            raise MuseTalkError(f"unknown compile mode {self.compile!r}: choose one of {', '.join(COMPILE_MODES)}")
        if self.static_batch is not None and self.static_batch < 1:
            raise MuseTalkError(f"static batch must be at least 1, got {self.static_batch}")
        if self.compile != "off" and self.static_batch is None:
            raise MuseTalkError(f"compile mode {self.compile!r} needs a static batch size (pad the last batch)")

    def uses_channels_last(self, device: torch.device) -> bool:
        return device.type == "cuda" if self.channels_last is None else self.channels_last

    def batch_rows(self, count: int) -> int:
        """Rows a batch of ``count`` frames runs with: the static batch size, or ``count`` without one."""
        if self.static_batch is None:
            return count
        if count > self.static_batch:
            raise MuseTalkError(f"a batch of {count} frames exceeds the static batch size {self.static_batch}")
        return self.static_batch

    @property
    def torch_compile_mode(self) -> str:
        return _TORCH_COMPILE_MODES[self.compile]


def default_acceleration(device: str | torch.device, batch_size: int, compile: str = "off") -> Acceleration:
    """How ``dub`` and ``serve`` run the model: batches padded to ``batch_size`` (static shapes) on CUDA or
    when compiled, as they come otherwise."""
    static = compile != "off" or torch.device(device).type == "cuda"
    return Acceleration(static_batch=max(1, batch_size) if static else None, compile=compile)


def pad_batch(tensor: torch.Tensor, size: int) -> torch.Tensor:
    """Append zero rows to ``tensor`` (B, ...) up to ``size`` >= B rows."""
    if len(tensor) == size:
        return tensor
    return torch.cat([tensor, tensor.new_zeros((size - len(tensor), *tensor.shape[1:]))])


class HostSlot:
    """A host buffer pair for one batch in flight: prompts going to the device and faces coming back.
    Pinned (page-locked) on CUDA so both copies are asynchronous; ``done`` marks the faces' arrival."""

    def __init__(self, rows: int, prompt_shape: tuple[int, ...], face_shape: tuple[int, ...], device: torch.device):
        pin = device.type == "cuda"
        self.rows = rows
        self.prompts = torch.empty((rows, *prompt_shape), dtype=torch.float32, pin_memory=pin)
        self.faces = torch.empty((rows, *face_shape), dtype=torch.uint8, pin_memory=pin)
        self.done = torch.cuda.Event() if pin else None

    def upload_prompts(self, prompts: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """float32 (B, 50, 384) -> the device, through the pinned buffer (non-blocking on CUDA)."""
        staged = self.prompts[: len(prompts)]
        staged.copy_(torch.from_numpy(np.ascontiguousarray(prompts, dtype=np.float32)))
        return staged.to(device=device, non_blocking=True).to(dtype)  # cast on the device, not on the host

    def download_faces(self, faces: torch.Tensor, count: int) -> None:
        """Start copying the first ``count`` faces (uint8 (B, H, W, 3) on the device) into the buffer."""
        self.faces[:count].copy_(faces[:count], non_blocking=True)
        if self.done is not None:
            self.done.record()

    def faces_ready(self, count: int) -> np.ndarray:
        """Wait for the copy; a fresh uint8 (count, H, W, 3) array (the buffer is reused)."""
        if self.done is not None:
            self.done.synchronize()
        return self.faces[:count].numpy().copy()


class HostRing:
    """``size`` :class:`HostSlot`s used in turn: up to ``size - 1`` batches may be in flight at once."""

    def __init__(self, prompt_shape: tuple[int, ...], face_shape: tuple[int, ...], device: torch.device,
                 size: int = 3) -> None:
        self.prompt_shape = prompt_shape
        self.face_shape = face_shape
        self.device = device
        self.slots: list[HostSlot | None] = [None] * size
        self.turn = 0

    def next(self, rows: int) -> HostSlot:
        """The next slot, (re)allocated when it holds fewer than ``rows`` rows."""
        index = self.turn % len(self.slots)
        self.turn += 1
        slot = self.slots[index]
        if slot is None or slot.rows < rows:
            slot = self.slots[index] = HostSlot(rows, self.prompt_shape, self.face_shape, self.device)
        return slot
