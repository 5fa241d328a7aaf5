"""``musetalk serve``: the real-time avatar server (WebRTC, WebSocket, the browser page at /, live channels)."""
from __future__ import annotations

import argparse
import logging

from ..errors import MuseTalkError
from ..models.layout import ENV_VAR as MODELS_ENV
from ..models.layout import VERSIONS
from ..realtime.backend import DEFAULT_BUDGET_S
from ..realtime.outputs.ice import DEFAULT_VIDEO_KBPS
from .device import add_device_argument

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve real-time avatars to browsers, WebRTC and WebSocket clients",
                       description="Serve prepared avatars: WebRTC (WHEP at /whep/{avatar}) and WebSocket "
                                   "(/ws/{avatar}) live sessions, the browser page at /, and optional live "
                                   "channels pushed to streaming platforms (--publish).")
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
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="without a token, another host name the server may be reached by (besides the --host "
                        "address and, on loopback, localhost): requests naming other hosts are refused, so that a "
                        "DNS-rebinding page cannot reach it; repeatable")
    p.add_argument("--max-upload-mb", type=float, default=500.0, help="largest avatar upload in MB (default: 500)")
    p.add_argument("--video-kbps", type=int, default=DEFAULT_VIDEO_KBPS,
                   help="WebRTC video bit rate in kbit/s, the encoder's start and ceiling; the receiver's bandwidth "
                        "estimate lowers it (default %(default)d: 720p within 1.5 Mbit/s, the mouth near 39 dB; "
                        "see docs/webrtc.md)")
    p.add_argument("--ice-server", action="append", default=[], metavar="URL",
                   help="a STUN or TURN server for WebRTC (stun:host:port, turn:host:port, turns:...); repeatable; "
                        "also handed to the page. More as JSON in $MUSETALK_ICE_SERVERS")
    p.add_argument("--turn-user", default=None, help="the username of the --ice-server turn: servers")
    p.add_argument("--turn-credential", default=None, help="the credential of the --ice-server turn: servers")
    p.add_argument("--publish", action="append", default=[], metavar="NAME=AVATAR,URL",
                   help="also run a live channel NAME of AVATAR pushed to URL (see `musetalk publish`), driven "
                        "through POST /channels/NAME/say|audio|interrupt; repeatable")
    p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="serve on Ray Serve: a local instance, or the cluster at ADDRESS (then the command "
                        "returns and the cluster keeps serving; run it again to change --replicas)")
    p.add_argument("--replicas", type=int, default=1, help="with --ray: replicas, each one engine on one GPU")
    p.set_defaults(func=run)


def add_engine_options(p: argparse.ArgumentParser) -> None:
    """The model and engine flags ``serve`` and ``publish`` share (read by :func:`backend_options`)."""
    p.add_argument("--models", help=f"models folder (default: ${MODELS_ENV} or ./models)")
    p.add_argument("--avatars", help="avatars folder (default: $MUSETALK_AVATARS or ./avatars)")
    p.add_argument("--version", choices=VERSIONS, default="v1.5", help="model version (default: v1.5)")
    add_device_argument(p)
    p.add_argument("--dtype", choices=("auto", "float32", "float16", "bfloat16"), default="auto",
                   help="model precision: auto is float16 on CUDA, float32 on CPU (as dub)")
    p.add_argument("--fp16", action="store_true", help=argparse.SUPPRESS)  # the former flag: --dtype float16
    p.add_argument("--compile", choices=("off", "compile", "cudagraphs"), default="off",
                   help="torch.compile the model step (cudagraphs: also capture it as a CUDA graph); batches are "
                        "padded to --batch-size (as they are on CUDA anyway)")
    p.add_argument("--decoder", choices=("vae", "tiny"), default="tiny",
                   help="latent decoder: TAESD (taesd/ in the models folder; default: ~12x cheaper decode, so "
                        "lower latency and more sessions) or the official sd-vae (finer detail)")
    p.add_argument("--batch-size", type=int, default=16, help="most frames per model call, over all sessions")
    p.add_argument("--lookahead", type=float, default=None,
                   help="default seconds of audio after a frame's window before it is rendered (default 0.4; "
                        "a client may choose its own with the lookahead query parameter)")
    p.add_argument("--latency-budget-ms", type=float, default=DEFAULT_BUDGET_S * 1000,
                   help="a frame not out this long after its due time is skipped (default %(default)g)")
    p.add_argument("--max-audio-ahead-s", type=float, default=30.0,
                   help="seconds of audio a session accepts ahead of its clock; a client sending more is refused "
                        "(error, close 1008) (default: %(default)g)")
    p.add_argument("--avatar-cache-mb", type=float, default=1024.0,
                   help="memory for loaded avatar frames, masks and latents, least recently used out (default: 1024)")


def check_engine_options(args: argparse.Namespace) -> None:
    """Refuse engine flags that cannot work, in one line, before anything loads."""
    if args.latency_budget_ms <= 0:
        raise MuseTalkError(f"--latency-budget-ms must be positive, got {args.latency_budget_ms:g}")
    if not args.max_audio_ahead_s > 0:
        raise MuseTalkError(f"--max-audio-ahead-s must be positive, got {args.max_audio_ahead_s:g}")


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


def access_policy(args: argparse.Namespace):
    """Who may use the server: the token (see :func:`access_token`), the allowed origins, and without a
    token the host names requests may give (the listening address, loopback names, ``--allow-host``)."""
    from ..realtime.web.access import AccessPolicy, served_hosts

    return AccessPolicy(access_token(args.token, args.host, args.port), tuple(args.allow_origin),
                        served_hosts(args.host, args.allow_host))


def run(args: argparse.Namespace) -> int:
    if args.max_sessions is not None and args.max_sessions < 1:
        raise MuseTalkError(f"--max-sessions must be at least 1, got {args.max_sessions}")
    check_engine_options(args)
    webrtc_settings(args)  # a bad ICE server or bit rate is refused before the models load
    publish_specs(args)  # and a bad --publish value
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


def webrtc_settings(args: argparse.Namespace):
    """The WebRTC settings of ``args`` and ``$MUSETALK_ICE_SERVERS``."""
    import os

    from ..realtime.outputs.ice import ENV_VAR, WebRTCSettings, ice_servers

    servers = ice_servers(args.ice_server, args.turn_user, args.turn_credential, os.environ.get(ENV_VAR))
    return WebRTCSettings(video_kbps=args.video_kbps, ice_servers=servers)


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


def backend_options(args: argparse.Namespace, max_sessions: int | None = None, jpeg_quality: int | None = 85):
    """The back end ``args`` describe; ``max_sessions`` (None: ``--max-sessions``, else calibrated) and
    ``jpeg_quality`` (85: the WebSocket protocol sends JPEGs; None: frames carry only their image)."""
    from ..realtime.backend import BackendOptions

    return BackendOptions(models=args.models, avatars=args.avatars, version=args.version, device=args.device,
                          dtype="float16" if args.fp16 else args.dtype,
                          compile=args.compile, decoder=args.decoder, batch_size=args.batch_size,
                          lookahead_s=args.lookahead, latency_budget_s=args.latency_budget_ms / 1000,
                          max_sessions=max_sessions or getattr(args, "max_sessions", None),
                          avatar_cache_mb=args.avatar_cache_mb, jpeg_quality=jpeg_quality,
                          max_audio_ahead_s=args.max_audio_ahead_s)


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
    from ..realtime.outputs.control import Voice
    from ..realtime.outputs.publish.routes import register_channels
    from ..realtime.web.metrics import ChannelCollector

    channels = register_channels(app, store, engine, specs, Voice().get)
    app.state.metrics.register(ChannelCollector(channels))
    app.state.channels = channels


def build_app(args: argparse.Namespace):
    """The server's FastAPI application (its engine in ``app.state.engine``), as ``args`` say."""
    from ..realtime.backend import load_backend
    from ..realtime.server import create_app

    backend = load_backend(backend_options(args))
    app = create_app(backend.store, backend.engine, access_policy(args), max_upload_mb=args.max_upload_mb,
                     webrtc=webrtc_settings(args))
    app.state.engine = backend.engine
    if args.publish:
        add_channels(app, backend.store, backend.engine, publish_specs(args))
    return app
