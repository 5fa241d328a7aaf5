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
    p.add_argument("--batch-size", type=int, default=16, help="most frames per model call, over all sessions")
    p.add_argument("--lookahead", type=float, default=None,
                   help="seconds of audio after a frame's window before it is rendered (default 0.4)")
    p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="serve on Ray Serve: a local instance, or the cluster at ADDRESS (then the command "
                        "returns and the cluster keeps serving; run it again to change --replicas)")
    p.add_argument("--replicas", type=int, default=1, help="with --ray: replicas, each one engine on one GPU")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.ray is not None:
        return run_on_ray(args)
    import uvicorn

    app = build_app(args)
    log.info("serving on http://%s:%d/", args.host, args.port)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        app.state.engine.close()
    return 0


def run_on_ray(args: argparse.Namespace) -> int:
    """``--ray``: deploy ``--replicas`` replicas of this server on Ray Serve."""
    import functools
    import threading

    from ..distributed.serve import ReplicaOptions, deploy

    deploy(functools.partial(build_app, args), ReplicaOptions(replicas=args.replicas), args.ray or None,
           args.host, args.port)
    print(f"{args.replicas} replicas serving on http://{args.host}:{args.port}/"
          + ("" if args.ray else " (local Ray instance; Ctrl-C stops it)"))
    if not args.ray:
        threading.Event().wait()
    return 0


def build_app(args: argparse.Namespace):
    """The server's FastAPI application (its engine in ``app.state.engine``), as ``args`` say."""
    import torch

    from ..face import load_face_parser
    from ..pipeline.lipsync import MuseTalk
    from ..realtime.avatar import AvatarStore
    from ..realtime.engine import Engine
    from ..realtime.server import create_app
    from ..realtime.streaming import DEFAULT_LOOKAHEAD_S
    from .avatar import default_device

    device = args.device or default_device()
    dtype = torch.float16 if args.fp16 else torch.float32
    mt = MuseTalk.from_pretrained(args.models, version=args.version, device=device, dtype=dtype)
    store = AvatarStore(args.avatars, mt, parser=load_face_parser(args.models, device=device))
    lookahead = DEFAULT_LOOKAHEAD_S if args.lookahead is None else args.lookahead
    engine = Engine(mt, batch_size=args.batch_size, lookahead_s=lookahead)
    app = create_app(store, engine)
    app.state.engine = engine
    log.info("%d avatars from %s", len(store.names()), store.root)
    return app
