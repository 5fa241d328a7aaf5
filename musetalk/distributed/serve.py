"""``musetalk serve --ray [ADDRESS] --replicas N``: the real-time server as a Ray Serve deployment.

Each replica builds what ``musetalk serve`` builds in one process (its own model and engine, on one GPU
or a share of the CPUs) from the same avatars folder, so an avatar prepared or uploaded once (into a
shared path) serves on every replica. Serve's proxy accepts the connections and hands each request,
WebSocket sessions included, to a replica chosen by the engines' own free capacity, not by open requests
(an engine admits by speaking units, and replicas may calibrate differently): every replica reports its
engine's /health ``free`` and ``load`` (``record_routing_stats``, every ``STATS_PERIOD_S``) and
:class:`~.routing.FreeCapacityRouter` tries the replicas with room first, least loaded first, then those
not reported yet, then full ones (whose engine answers 1013). A replica at ``max_ongoing_requests`` takes
none.
Every response and WebSocket handshake carries ``x-musetalk-replica``: which replica answered. Running
the command again with another ``--replicas`` rolls the deployment over to that many replicas: new
sessions go to the new ones while each old one finishes its open sessions (up to ``drain_s``) first.
"""
from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from typing import Callable, Sequence

from .cluster import connect

log = logging.getLogger(__name__)

APP_NAME = "musetalk"
REPLICA_HEADER = b"x-musetalk-replica"
STATS_PERIOD_S = 0.5  # how often each replica reports its engine's free capacity to the routers


@dataclass(frozen=True)
class ReplicaOptions:
    """How many replicas, what each asks of the cluster (one GPU each when the cluster has GPUs, else
    ``cpus``), and the sessions one replica's engine admits (its requests in flight are capped a little
    above, so HTTP calls pass beside full engines and a session too many meets the engine's 1013).
    ``drain_s``: how long a replica being replaced keeps serving its open sessions."""

    replicas: int = 1
    cpus: float = 1.0
    sessions: int = 12
    http_headroom: int = 4
    drain_s: float = 600.0

    @property
    def max_ongoing_requests(self) -> int:
        return self.sessions + self.http_headroom


class ReplicaTagged:
    """ASGI wrapper adding ``x-musetalk-replica: HOST:PID`` to every HTTP response and WebSocket accept."""

    def __init__(self, app) -> None:
        self.app = app
        self.replica = f"{socket.gethostname()}:{os.getpid()}".encode()

    async def __call__(self, scope, receive, send) -> None:
        async def tagged(message: dict) -> None:
            if message["type"] in ("http.response.start", "websocket.accept"):
                message = {**message, "headers": [*message.get("headers", []), (REPLICA_HEADER, self.replica)]}
            await send(message)

        await self.app(scope, receive, tagged)


class AvatarReplica:
    """One replica's server (``make_app()``, tagged with the replica) and what it reports for routing: its
    engine's free capacity (the app's ``state.engine.health()``, as ``GET /health`` shows it)."""

    def __init__(self, make_app: Callable[[], object]) -> None:
        self.make_app = make_app
        self.tagged: ReplicaTagged | None = None  # (not ``app``: Serve's ingress wrapper owns that name)

    def __serve_build_asgi_app__(self) -> ReplicaTagged:
        """Serve builds the ASGI app on the replica after the constructor."""
        self.tagged = ReplicaTagged(self.make_app())
        return self.tagged

    def record_routing_stats(self) -> dict:
        """``{"free": a new speaking session fits, "load": 0..1 share in use}`` of this replica's engine."""
        health = self.tagged.app.state.engine.health()
        return {"free": bool(health["free"]), "load": float(health["load"])}


def rank_by_free_capacity(replicas: Sequence) -> list[list]:
    """Serve replicas (each with ``routing_stats``) in ranks to try in turn: first those whose engine has room
    (least loaded first) with those that have not reported yet (just started: their engine is empty), and
    within the rank Serve takes the one with the fewest requests in flight, so sessions arriving together
    between two reports still spread; then full ones."""
    free = sorted((r for r in replicas if r.routing_stats.get("free") is True), key=lambda r: r.routing_stats["load"])
    unreported = [r for r in replicas if "free" not in r.routing_stats]
    full = [r for r in replicas if r.routing_stats.get("free") is False]
    return [rank for rank in (free + unreported, full) if rank]


def deploy(make_app: Callable[[], object], options: ReplicaOptions, address: str | None = None,
           host: str = "127.0.0.1", port: int = 8000, **local_options):
    """Run (or rescale, when it runs already) the ``musetalk`` Serve application: ``options.replicas``
    replicas each serving ``make_app()`` (a picklable callable returning an ASGI app) at http://HOST:PORT/.
    ``local_options`` go to ``ray.init`` when no ``address`` is given. Returns the ``ray`` module."""
    ray = connect(address, **local_options)
    from ray import serve

    from ray.serve.config import RequestRouterConfig

    from .routing import FreeCapacityRouter

    serve.start(http_options={"host": host, "port": port})
    ask = {"num_gpus": 1} if ray.cluster_resources().get("GPU") else {"num_cpus": options.cpus}
    routing = RequestRouterConfig(request_router_class=FreeCapacityRouter, request_routing_stats_period_s=STATS_PERIOD_S)
    deployment = serve.deployment(serve.ingress()(AvatarReplica), name="AvatarReplica",
                                  num_replicas=options.replicas, max_ongoing_requests=options.max_ongoing_requests,
                                  graceful_shutdown_timeout_s=options.drain_s, ray_actor_options=ask,
                                  request_router_config=routing)
    serve.run(deployment.bind(make_app), name=APP_NAME, route_prefix="/")
    log.info("%d replicas serving on http://%s:%d/", options.replicas, host, port)
    return ray
