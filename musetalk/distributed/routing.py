"""The Ray Serve request router of ``musetalk serve --ray``: replicas by their engines' free capacity
(:func:`~.serve.rank_by_free_capacity` of the stats each replica reports), not by open requests."""
from __future__ import annotations

from ray.serve.request_router import FIFOMixin, PendingRequest, RequestRouter, RunningReplica

from .serve import rank_by_free_capacity


class FreeCapacityRouter(FIFOMixin, RequestRouter):
    """Tries replicas whose engine has room, or that have not reported yet, first (least loaded first), then
    full ones; within a rank Serve takes the one with the fewest requests in flight."""

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        return rank_by_free_capacity(candidate_replicas)
