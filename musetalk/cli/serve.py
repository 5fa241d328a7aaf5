"""``musetalk serve``: the real-time avatar server (HTTP + WebSocket, browser page at /)."""
from __future__ import annotations

import argparse
import logging

from ..models.layout import ENV_VAR as MODELS_ENV
from ..models.layout import VERSIONS

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve real-time avatars to browsers and WebSocket clients",
                       description="Serve prepared avatars: stream 16 kHz PCM speech in over /ws/{avatar}, get "
                                   "JPEG frames back; the page at / uses the microphone or a WAV file.")
    p.add_argument("--models", help=f"models folder (default: ${MODELS_ENV} or ./models)")
    p.add_argument("--avatars", help="avatars folder (default: $MUSETALK_AVATARS or ./avatars)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--version", choices=VERSIONS, default="v1.5", help="model version (default: v1.5)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--fp16", action="store_true", help="half precision (GPU)")
    p.add_argument("--decoder", choices=("vae", "tiny"), default="tiny",
                   help="latent decoder: TAESD (taesd/ in the models folder; default: ~12x cheaper decode, so "
                        "lower latency and more sessions) or the official sd-vae (finer detail)")
    p.add_argument("--batch-size", type=int, default=16, help="most frames per model call, over all sessions")
    p.add_argument("--lookahead", type=float, default=None,
                   help="seconds of audio after a frame's window before it is rendered (default 0.4)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch
    import uvicorn

    from ..face import load_face_parser
    from ..pipeline.lipsync import MuseTalk
    from ..realtime.avatar import AvatarStore
    from ..realtime.engine import Engine
    from ..realtime.server import create_app
    from ..realtime.streaming import DEFAULT_LOOKAHEAD_S
    from .avatar import default_device

    device = args.device or default_device()
    dtype = torch.float16 if args.fp16 else torch.float32
    mt = MuseTalk.from_pretrained(args.models, version=args.version, device=device, dtype=dtype,
                                  decoder=args.decoder)
    store = AvatarStore(args.avatars, mt, parser=load_face_parser(args.models, device=device))
    lookahead = DEFAULT_LOOKAHEAD_S if args.lookahead is None else args.lookahead
    with Engine(mt, batch_size=args.batch_size, lookahead_s=lookahead) as engine:
        app = create_app(store, engine)
        log.info("serving %d avatars from %s on http://%s:%d/", len(store.names()), store.root, args.host, args.port)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
