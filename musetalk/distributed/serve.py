"""``musetalk serve --ray [ADDRESS] --replicas N``: the real-time server as a Ray Serve deployment.

Each replica builds what ``musetalk serve`` builds in one process (its own model and engine, on one GPU
or a share of the CPUs) from the same avatars folder, so an avatar prepared or uploaded once (into a
shared path) serves on every replica. Serve's proxy accepts the connections and hands each request,
WebSocket sessions included, to the replica with the fewest requests in flight (two sampled, the less
loaded taken; a replica at ``max_ongoing_requests`` takes none), so sessions spread over the replicas and
the per-replica admission control of the engine refuses one (close 1013) only when its replica is full.
Every response and WebSocket handshake carries ``x-musetalk-replica``: which replica answered. Running
the command again with another ``--replicas`` rolls the deployment over to that many replicas: new
sessions go to the new ones while each old one finishes its open sessions (up to ``drain_s``) first.
"""
from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from typing import Callable

from .cluster import connect

log = logging.getLogger(__name__)

APP_NAME = "musetalk"
REPLICA_HEADER = b"x-musetalk-replica"


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


def deploy(make_app: Callable[[], object], options: ReplicaOptions, address: str | None = None,
           host: str = "127.0.0.1", port: int = 8000, **local_options):
    """Run (or rescale, when it runs already) the ``musetalk`` Serve application: ``options.replicas``
    replicas each serving ``make_app()`` (a picklable callable returning an ASGI app) at http://HOST:PORT/.
    ``local_options`` go to ``ray.init`` when no ``address`` is given. Returns the ``ray`` module."""
    ray = connect(address, **local_options)
    from ray import serve

    serve.start(http_options={"host": host, "port": port})
    def build_on_replica() -> ReplicaTagged:  # Serve calls a plain function (not any callable) on each replica
        return ReplicaTagged(make_app())

    ask = {"num_gpus": 1} if ray.cluster_resources().get("GPU") else {"num_cpus": options.cpus}
    deployment = serve.deployment(serve.ingress(build_on_replica)(), name="AvatarReplica",
                                  num_replicas=options.replicas, max_ongoing_requests=options.max_ongoing_requests,
                                  graceful_shutdown_timeout_s=options.drain_s, ray_actor_options=ask)
    serve.run(deployment.bind(), name=APP_NAME, route_prefix="/")
    log.info("%d replicas serving on http://%s:%d/", options.replicas, host, port)
    return ray
