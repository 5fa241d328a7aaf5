"""Avatar data in memory: one least-recently-used cache under a byte cap, shared by all loaded avatars.

It holds what is expensive to rebuild and large: loaded avatars (their latents), decoded frames and
unpacked blend masks. Evicting an entry only drops the cache's reference: whoever still holds the object
keeps it, and the next ``get`` rebuilds it from disk.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Callable, Hashable, TypeVar

log = logging.getLogger(__name__)

DEFAULT_CACHE_MB = 1024.0
T = TypeVar("T")


class MemoryCache:
    """``get(key, load, size)``: the cached value of ``key``, or ``load()`` stored under it.

    ``size(value)`` gives its bytes; the least recently used entries are dropped while the total exceeds
    ``capacity_bytes`` (a value larger than the whole cap is returned but not kept). Thread-safe; ``load``
    runs outside the lock, so two threads missing the same key may both load it (the first one stays).
    """

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = int(capacity_bytes)
        self._entries: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0

    @classmethod
    def of_megabytes(cls, megabytes: float) -> "MemoryCache":
        return cls(int(megabytes * 1024 * 1024))

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def keys(self) -> list[Hashable]:
        """Cached keys, least recently used first."""
        with self._lock:
            return list(self._entries)

    def get(self, key: Hashable, load: Callable[[], T], size: Callable[[T], int]) -> T:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[0]  # type: ignore[return-value]
        value = load()
        self._put(key, value, int(size(value)))
        return value

    def peek(self, key: Hashable) -> object | None:
        """The cached value of ``key`` (now the most recently used), or None; never loads."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[0]

    def drop(self, match: Callable[[Hashable], bool]) -> None:
        """Forget every entry whose key ``match``es."""
        with self._lock:
            for key in [k for k in self._entries if match(k)]:
                self._bytes -= self._entries.pop(key)[1]

    def _put(self, key: Hashable, value: object, nbytes: int) -> None:
        if nbytes > self.capacity_bytes:
            log.debug("not caching %r: %d bytes exceed the %d byte cap", key, nbytes, self.capacity_bytes)
            return
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = (value, nbytes)
            self._bytes += nbytes
            while self._bytes > self.capacity_bytes:
                _, (_, freed) = self._entries.popitem(last=False)
                self._bytes -= freed
