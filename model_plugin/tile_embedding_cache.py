"""Embeddings of recently encoded tiles, found by their pixels, so no tile is encoded twice.

InternViT sees each tile alone, so a tile's embedding depends only on its pixels
(and the weights). Repeats are common: stateless chat clients resend every image
of the history each turn, a thumbnail is shared by budgets that differ, and a
document's blank tiles are identical. vLLM's own encoder cache keys whole items
and holds only about one large image (its size is the batched-token budget);
on the CPU its 128-token KV blocks also end a prefix-cache hit short of the end
of a resent image, so without this the whole image was encoded again.

The processor digests each tile where it is made (the API process, CPU memory);
the model looks tiles up by digest. The store is a single buffer allocated with
the model, so vLLM's memory profile sees it and sizes the KV cache around it.
Every rank sees the same digests in the same order, so all ranks hit and miss
alike and the encoder's collectives stay in step.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import torch
from blake3 import blake3

DIGEST_WORDS = 2  # 128-bit digests, as two int64 per tile


def tile_digests(tiles: torch.Tensor) -> torch.Tensor:
    """[t, 3, h, w] uint8 -> [t, 2] int64: a 128-bit blake3 digest of each tile's pixels and shape."""
    tiles = tiles.contiguous()
    out = np.empty((tiles.shape[0], DIGEST_WORDS), dtype=np.int64)
    shape = repr(tuple(tiles.shape[1:])).encode()
    for index, tile in enumerate(tiles.numpy()):
        hasher = blake3(shape)
        hasher.update(tile.data)
        out[index] = np.frombuffer(hasher.digest(8 * DIGEST_WORDS), dtype=np.int64)
    return torch.from_numpy(out)


class TileEmbeddingCache:
    """A fixed number of tile embeddings [slots, tokens, hidden], least recently used out first."""

    def __init__(self, slots: int, tokens_per_tile: int, hidden: int, dtype: torch.dtype, device=None) -> None:
        self.store = torch.empty(slots, tokens_per_tile, hidden, dtype=dtype, device=device)
        self._slot_of: OrderedDict[bytes, int] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @classmethod
    def sized(cls, mib: float, tokens_per_tile: int, hidden: int, dtype: torch.dtype) -> TileEmbeddingCache | None:
        """As many slots as `mib` holds, on the current default device; None when that is none."""
        per_tile = tokens_per_tile * hidden * torch.empty((), dtype=dtype).element_size()
        slots = int(mib * 2**20) // per_tile
        return cls(slots, tokens_per_tile, hidden, dtype) if slots > 0 else None

    @property
    def slots(self) -> int:
        return self.store.shape[0]

    def embed(self, tiles: torch.Tensor, digests: torch.Tensor, encode: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """[t, tokens, hidden] for `tiles`: stored rows where a digest is known, `encode` on the rest.

        Tiles repeated within the call are encoded once. Stored rows are copied
        out before anything new is stored, so eviction never touches them.
        """
        if self.store.device != tiles.device:
            # Built where the model was (a loader may build on "meta" and place weights
            # later): the store follows the encoder's input, empty.
            self.store = torch.empty_like(self.store, device=tiles.device)
            self._slot_of.clear()
        keys = [row.tobytes() for row in digests.cpu().numpy()]
        first_index: dict[bytes, int] = {}
        for index, key in enumerate(keys):
            first_index.setdefault(key, index)
        stored = [key for key in first_index if key in self._slot_of]
        missing = [key for key in first_index if key not in self._slot_of]
        for key in stored:
            self._slot_of.move_to_end(key)
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)

        if len(missing) == len(keys):  # all new and distinct (fresh images): nothing to gather or reorder
            fresh = encode(tiles)
            self._store(missing, fresh)
            return fresh
        parts, row_of = [], {}
        if stored:
            slots = torch.tensor([self._slot_of[key] for key in stored], device=self.store.device)
            parts.append(self.store.index_select(0, slots))
            row_of.update((key, row) for row, key in enumerate(stored))
        if missing:
            fresh = encode(tiles[torch.tensor([first_index[key] for key in missing], device=tiles.device)])
            parts.append(fresh)
            row_of.update((key, len(stored) + row) for row, key in enumerate(missing))
        rows = torch.cat(parts) if len(parts) > 1 else parts[0]
        order = torch.tensor([row_of[key] for key in keys], device=rows.device)
        embeddings = rows.index_select(0, order)
        if missing:
            self._store(missing, fresh)
        return embeddings

    def _store(self, keys: list[bytes], rows: torch.Tensor) -> None:
        # The newest rows win when a call brings more new tiles than there are slots.
        keys, rows = keys[-self.slots:], rows[-self.slots:]
        slots = []
        for key in keys:
            if len(self._slot_of) < self.slots:
                slot = len(self._slot_of)
            else:
                _, slot = self._slot_of.popitem(last=False)
            self._slot_of[key] = slot
            slots.append(slot)
        self.store.index_copy_(0, torch.tensor(slots, device=self.store.device), rows.to(self.store.dtype))
