"""``musetalk serve``: the real-time avatar server (HTTP + WebSocket, browser page at /)."""
from __future__ import annotations

import argparse
import logging

from ..errors import MuseTalkError
from ..models.layout import ENV_VAR as MODELS_ENV
from ..models.layout import VERSIONS

log = logging.getLogger(__name__)

DEFAULT_BUDGET_MS = 200.0  # the real-time bound of bench/realtime.py (p95 < 200 ms)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve real-time avatars to browsers and WebSocket clients",
                       description="Serve prepared avatars: stream 16 kHz PCM speech in over /ws/{avatar}, get "
                                   "JPEG frames back; the page at / uses the microphone or a WAV file.")
    add_engine_options(p)
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--max-sessions", type=int, default=None,
                   help="speaking sessions admitted (default: measured by a short calibration at start-up)")
    p.add_argument("--token", default=None,
                   help="access token for everything but the page and /health (default: $MUSETALK_TOKEN; generated "
                        "and logged when --host is not a loopback address)")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="another origin (scheme://host:port, or *) whose pages may use the server; repeatable")
    p.add_argument("--max-upload-mb", type=float, default=500.0, help="largest avatar upload in MB (default: 500)")
    p.add_argument("--publish", action="append", default=[], metavar="NAME=AVATAR,URL",
                   help="also run a live channel NAME of AVATAR pushed to URL (see `musetalk publish`), driven "
                        "through POST /channels/NAME/say|audio|interrupt; repeatable")
    p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="serve on Ray Serve: a local instance, or the cluster at ADDRESS (then the command "
                        "returns and the cluster keeps serving; run it again to change --replicas)")
    p.add_argument("--replicas", type=int, default=1, help="with --ray: replicas, each one engine on one GPU")
    p.set_defaults(func=run)


def add_engine_options(p: argparse.ArgumentParser) -> None:
    """The model and engine flags ``serve`` and ``publish`` share (read by :func:`build_engine`)."""
    p.add_argument("--models", help=f"models folder (default: ${MODELS_ENV} or ./models)")
    p.add_argument("--avatars", help="avatars folder (default: $MUSETALK_AVATARS or ./avatars)")
    p.add_argument("--version", choices=VERSIONS, default="v1.5", help="model version (default: v1.5)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--fp16", action="store_true", help="half precision (GPU)")
    p.add_argument("--decoder", choices=("vae", "tiny"), default="tiny",
                   help="latent decoder: TAESD (taesd/ in the models folder; default: ~12x cheaper decode, so "
                        "lower latency and more sessions) or the official sd-vae (finer detail)")
    p.add_argument("--batch-size", type=int, default=16, help="most frames per model call, over all sessions")
    p.add_argument("--lookahead", type=float, default=None,
                   help="default seconds of audio after a frame's window before it is rendered (default 0.4; "
                        "a client may choose its own with the lookahead query parameter)")
    p.add_argument("--latency-budget-ms", type=float, default=DEFAULT_BUDGET_MS,
                   help="a frame not out this long after its due time is skipped (default %(default)g)")
    p.add_argument("--avatar-cache-mb", type=float, default=1024.0,
                   help="memory for loaded avatar frames, masks and latents, least recently used out (default: 1024)")


def check_engine_options(args: argparse.Namespace) -> None:
    """Refuse engine flags that cannot work, in one line."""
    if args.latency_budget_ms <= 0:
        raise MuseTalkError(f"--latency-budget-ms must be positive, got {args.latency_budget_ms:g}")


def access_token(given: str | None, host: str, port: int) -> str | None:
    """``given``, else ``$MUSETALK_TOKEN``, else a new token when ``host`` is reachable from other machines
    (its URL logged at warning level so it is seen), else None."""
    import os

    from ..realtime.web.access import ENV_VAR, is_loopback, new_token

    token = given or os.environ.get(ENV_VAR) or None
    if token is None and not is_loopback(host):
        token = new_token()
        log.warning("listening on %s without --token: generated one; open the page at http://%s:%d/?token=%s",
                    host, host, port, token)
    return token


def run(args: argparse.Namespace) -> int:
    if args.max_sessions is not None and args.max_sessions < 1:
        raise MuseTalkError(f"--max-sessions must be at least 1, got {args.max_sessions}")
    check_engine_options(args)
    publish_specs(args)
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
    """``--ray``: deploy ``--replicas`` replicas of this server on Ray Serve (one token for all)."""
    import functools
    import threading

    from ..distributed.serve import ReplicaOptions, deploy

    args.token = access_token(args.token, args.host, args.port)
    replicas = ReplicaOptions(replicas=args.replicas, sessions=args.max_sessions or ReplicaOptions.sessions)
    deploy(functools.partial(build_app, args), replicas, args.ray or None, args.host, args.port)
    print(f"{args.replicas} replicas serving on http://{args.host}:{args.port}/"
          + ("" if args.ray else " (local Ray instance; Ctrl-C stops it)"))
    if not args.ray:
        threading.Event().wait()
    return 0


def publish_specs(args: argparse.Namespace) -> list:
    """The ``--publish`` values as channel specs (checked: format, URL, avatar), or [] without any."""
    if not args.publish:
        return []
    from ..realtime.outputs.publish import ChannelSpec, parse_target
    from ..realtime.outputs.publish.routes import parse_publish
    from .publish import check_avatar

    specs = []
    for value in args.publish:
        name, avatar, url = parse_publish(value)
        check_avatar(args.avatars, avatar)
        specs.append(ChannelSpec(name, avatar, parse_target(url)))
    return specs


def add_channels(app, store, engine, specs: list) -> None:
    """Run ``specs``' channels beside the sessions: inbox routes and their /metrics."""
    from ..realtime.outputs.publish.routes import register_channels
    from ..realtime.outputs.ws import Voice
    from ..realtime.web.metrics import ChannelCollector

    channels = register_channels(app, store, engine, specs, Voice().get)
    app.state.metrics.register(ChannelCollector(channels))
    app.state.channels = channels


def build_engine(args: argparse.Namespace, capacity: int | None = None, jpeg_quality: int | None = 85):
    """(AvatarStore, Engine) as the engine flags of ``args`` say; ``capacity``: speaking sessions admitted
    (None: ``--max-sessions`` or a short calibration)."""
    import torch

    from ..face import load_face_parser
    from ..pipeline.lipsync import MuseTalk
    from ..realtime.avatars.store import AvatarStore
    from ..realtime.engine.admission import calibrate
    from ..realtime.engine.engine import Engine
    from ..realtime.engine.streaming import DEFAULT_LOOKAHEAD_S
    from .avatar import default_device

    device = args.device or default_device()
    dtype = torch.float16 if args.fp16 else torch.float32
    mt = MuseTalk.from_pretrained(args.models, version=args.version, device=device, dtype=dtype,
                                  decoder=args.decoder)
    store = AvatarStore(args.avatars, mt, parser=load_face_parser(args.models, device=device),
                        cache_mb=args.avatar_cache_mb)
    lookahead = DEFAULT_LOOKAHEAD_S if args.lookahead is None else args.lookahead
    budget = args.latency_budget_ms / 1000
    capacity = capacity or getattr(args, "max_sessions", None) or calibrate(mt, args.batch_size, budget)
    engine = Engine(mt, batch_size=args.batch_size, jpeg_quality=jpeg_quality, lookahead_s=lookahead,
                    latency_budget_s=budget, capacity=capacity)
    return store, engine


def build_app(args: argparse.Namespace):
    """The server's FastAPI application (its engine in ``app.state.engine``), as ``args`` say."""
    from ..realtime.server import create_app
    from ..realtime.web.access import AccessPolicy

    store, engine = build_engine(args)
    access = AccessPolicy(access_token(args.token, args.host, args.port), tuple(args.allow_origin))
    app = create_app(store, engine, access, max_upload_mb=args.max_upload_mb)
    app.state.engine = engine
    if args.publish:
        add_channels(app, store, engine, publish_specs(args))
    log.info("%d avatars from %s", len(store.names()), store.root)
    return app
