"""The real-time back end as one unit: the loaded model, its avatars folder (with the face parser) and the
engine serving them, built from one set of options. ``musetalk serve`` and the Pipecat integration
(:mod:`musetalk.integrations.pipecat`) both build theirs here.

Only lazy imports at module level: the CLI imports this module to answer ``--help`` without torch.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from ..pipeline.device import default_device

log = logging.getLogger(__name__)

DEFAULT_BUDGET_S = 0.2  # the real-time bound of bench/realtime.py (p95 < 200 ms)


@dataclass(frozen=True)
class BackendOptions:
    """What a back end is made of (names as ``musetalk serve``'s flags).

    models / avatars: folders (None: ``$MUSETALK_MODELS`` / ``$MUSETALK_AVATARS``, else ./models, ./avatars);
    device: torch device (None: :func:`default_device`); dtype: "auto" (float16 on CUDA, float32 on CPU, as
    ``dub``), "float32", "float16" or "bfloat16"; compile: "off", "compile" or "cudagraphs" (batches then
    padded to ``batch_size``, as on CUDA anyway); decoder: "tiny" (TAESD) or
    "vae"; batch_size: most frames per model call; lookahead_s: default audio after a frame's window
    (None: the engine's default); latency_budget_s: a frame this late after its due time is skipped;
    max_sessions: speaking sessions admitted (None: calibrated at start-up); avatar_cache_mb: memory for
    loaded avatars; jpeg_quality: JPEG of each frame (None: frames carry only their RGB image);
    max_audio_ahead_s: audio a session accepts ahead of its clock (None: the engine's default).
    """

    models: str | None = None
    avatars: str | None = None
    version: str = "v1.5"
    device: str | None = None
    dtype: str = "auto"
    compile: str = "off"
    decoder: str = "tiny"
    batch_size: int = 16
    lookahead_s: float | None = None
    latency_budget_s: float = DEFAULT_BUDGET_S
    max_sessions: int | None = None
    avatar_cache_mb: float = 1024.0
    jpeg_quality: int | None = 85
    max_audio_ahead_s: float | None = None


@dataclass
class Backend:
    """``mt``: the loaded :class:`~musetalk.MuseTalk`; ``store``: its
    :class:`~musetalk.realtime.avatars.store.AvatarStore`; ``engine``: the running
    :class:`~musetalk.realtime.engine.engine.Engine` (close it when done)."""

    mt: object
    store: object
    engine: object


def open_store(avatars: str | None, models: str | None, mt, device: str, **options):
    """The avatars folder as every command opens it for ``mt``: with the face parser of ``models`` when its
    weights are there (the parsing blend masks), so an avatar one command prepared is not stale for another.
    ``options`` go to :class:`~musetalk.realtime.avatars.store.AvatarStore`."""
    from ..face import load_face_parser
    from .avatars.store import AvatarStore

    return AvatarStore(avatars, mt, parser=load_face_parser(models, device=device), **options)


def model_settings(options: BackendOptions):
    """(device, torch dtype, :class:`~musetalk.pipeline.acceleration.Acceleration`) as ``dub`` chooses them:
    CUDA when there is one, float16 there, batches padded to ``batch_size`` on CUDA or when compiled."""
    from ..pipeline.acceleration import default_acceleration, resolve_dtype

    device = options.device or default_device()
    return device, resolve_dtype(options.dtype, device), default_acceleration(device, options.batch_size,
                                                                              options.compile)


def load_backend(options: BackendOptions) -> Backend:
    """Load the model, open the avatars folder and start the engine as ``options`` say (seconds to minutes:
    the model loads, and without ``max_sessions`` a short calibration measures the capacity)."""
    from ..pipeline.lipsync import MuseTalk
    from .engine.admission import calibrate
    from .engine.engine import Engine
    from .engine.streaming import DEFAULT_LOOKAHEAD_S

    device, dtype, accel = model_settings(options)
    mt = MuseTalk.from_pretrained(options.models, version=options.version, device=device, dtype=dtype,
                                  decoder=options.decoder, accel=accel)
    store = open_store(options.avatars, options.models, mt, device, cache_mb=options.avatar_cache_mb)
    lookahead = DEFAULT_LOOKAHEAD_S if options.lookahead_s is None else options.lookahead_s
    budget = options.latency_budget_s
    capacity = options.max_sessions or calibrate(mt, options.batch_size, budget)
    ahead = {} if options.max_audio_ahead_s is None else {"max_audio_ahead_s": options.max_audio_ahead_s}
    engine = Engine(mt, batch_size=options.batch_size, jpeg_quality=options.jpeg_quality, lookahead_s=lookahead,
                    latency_budget_s=budget, capacity=capacity, **ahead)
    log.info("engine on %s (%s decoder, capacity %d), %d avatars in %s", device, options.decoder, capacity,
             len(store.names()), store.root)
    return Backend(mt, store, engine)
