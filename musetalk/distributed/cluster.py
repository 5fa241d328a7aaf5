"""Connecting to Ray: a local instance (no address) or a cluster (``ray://host:10001``, ``host:6379``,
``auto``); every failure to connect is one line."""
from __future__ import annotations

import logging
import socket

from ..errors import MuseTalkError

log = logging.getLogger(__name__)


class ClusterError(MuseTalkError):
    """Ray is missing, or the cluster cannot be reached."""


def import_ray():
    """The ``ray`` module, or one line on how to install it."""
    try:
        import ray
    except ImportError:
        raise ClusterError("--ray needs Ray: pip install 'ray[serve]'") from None
    return ray


def connect(address: str | None = None, **local_options):
    """Join the Ray cluster at ``address`` or start a local instance (``local_options`` go to
    ``ray.init``: num_cpus, num_gpus, ...); already connected is fine. Returns the ``ray`` module."""
    ray = import_ray()
    if address and address != "auto":
        _check_reachable(address)
    if ray.is_initialized():
        return ray
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(include_dashboard=False, log_to_driver=False, **local_options)
    except (ConnectionError, TimeoutError, ValueError, RuntimeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise ClusterError(f"cannot reach the Ray cluster at {address}: {reason}; start it with `ray start "
                           f"--head` or check the address") from None
    log.info("Ray: %s", ray.cluster_resources())
    return ray


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast (Ray itself waits a minute) when nothing listens at ``[ray://]host:port``."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"bad Ray address {address!r}: use host:port, ray://host:port or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ClusterError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}; start it with "
                           f"`ray start --head` or check the address") from None
