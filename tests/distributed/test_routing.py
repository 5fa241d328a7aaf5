"""Ray Serve routing by the engines' own free capacity: each replica reports its engine's /health ``free``
and ``load``; a replica whose engine has room is tried before a full one, whatever their open requests."""
from __future__ import annotations

from types import SimpleNamespace

from musetalk.distributed.serve import AvatarReplica, rank_by_free_capacity


def replica(name: str, stats: dict) -> SimpleNamespace:
    return SimpleNamespace(name=name, routing_stats=stats)


def test_a_free_replica_is_tried_before_a_full_one_with_fewer_open_requests():
    """The full replica holds 1 open request (one speaking session fills its engine); the free one holds 3
    (idle sessions, room for one more speaker). Counting requests would pick the full one."""
    full = replica("full", {"free": False, "load": 1.0, "requests": 1})
    free = replica("free", {"free": True, "load": 0.75, "requests": 3})
    assert [[r.name for r in rank] for rank in rank_by_free_capacity([full, free])] == [["free"], ["full"]]


def test_free_and_unreported_replicas_share_the_first_rank_least_loaded_first_then_full():
    replicas = [replica("full", {"free": False, "load": 1.0}), replica("busy", {"free": True, "load": 0.5}),
                replica("new", {}), replica("idle", {"free": True, "load": 0.0})]
    assert [[r.name for r in rank] for rank in rank_by_free_capacity(replicas)] == [["idle", "busy", "new"],
                                                                                    ["full"]]


class Engine:
    def __init__(self, health: dict) -> None:
        self._health = health

    def health(self) -> dict:
        return self._health


def test_a_replica_reports_its_engines_free_capacity():
    app = SimpleNamespace(state=SimpleNamespace(engine=Engine({"sessions": 3, "speaking": 1, "capacity": 2,
                                                               "load": 0.75, "free": True})))
    served = AvatarReplica(lambda: app)
    tagged = served.__serve_build_asgi_app__()
    assert tagged.app is app
    assert served.record_routing_stats() == {"free": True, "load": 0.75}
