"""Tiled images kept by content, so that a resent image is not decoded and tiled again.

Stateless clients resend the whole history every turn, images included; the
tiles of an image depend only on its bytes, the model's tiling rule and the
budget, which together make the key. Bounded by the bytes of tiles held, least
recently used first out. Shared by the preprocessing threads, hence the lock.
Tensors in it are never written to: vLLM's processor only reads them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any


class TileCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Any | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: str, value: Any, size: int) -> None:
        if size > self.max_bytes:
            return  # also the whole story when the cache is off (max_bytes 0)
        with self._lock:
            if key in self._items:
                return
            self._items[key] = (value, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, evicted) = self._items.popitem(last=False)
                self.bytes -= evicted

    def __len__(self) -> int:
        return len(self._items)
