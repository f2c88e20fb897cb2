"""The model's store of encoded tiles: found by pixels, each tile encoded once, LRU within a fixed size.

The encoder here is a stand-in whose output is a function of each tile's pixels
alone (as InternViT's is), and it records what it was asked to encode. That the
real model's outputs are unchanged by the store is tested against the
transformers oracle in tests/test_plugin_parity.py.
"""

import torch

from model_plugin.tile_embedding_cache import TileEmbeddingCache, tile_digests

TOKENS, HIDDEN = 4, 3


def tiles(*seeds: int, size: int = 8) -> torch.Tensor:
    return torch.stack([torch.randint(0, 256, (3, size, size), dtype=torch.uint8,
                                      generator=torch.Generator().manual_seed(seed)) for seed in seeds])


class Encoder:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        self.batches.append([int(tile.sum()) for tile in batch])
        return self.expected(batch)

    @staticmethod
    def expected(batch: torch.Tensor) -> torch.Tensor:
        per_tile = batch.float().flatten(1)
        rows = torch.stack([per_tile.mean(1), per_tile.std(1), per_tile[:, 0]], dim=1)
        return rows[:, None, :].repeat(1, TOKENS, 1) + torch.arange(TOKENS, dtype=torch.float32)[None, :, None]

    def encoded(self) -> list[int]:
        return [tile for batch in self.batches for tile in batch]


def sums(batch: torch.Tensor) -> list[int]:
    return [int(tile.sum()) for tile in batch]


def run(cache: TileEmbeddingCache, encoder: Encoder, batch: torch.Tensor) -> torch.Tensor:
    out = cache.embed(batch, tile_digests(batch), encoder)
    assert torch.equal(out, Encoder.expected(batch)), "a tile got another tile's embedding"
    return out


def test_digests_name_the_pixels():
    a, b = tiles(1), tiles(2)
    assert torch.equal(tile_digests(a), tile_digests(a.clone()))
    assert not torch.equal(tile_digests(a), tile_digests(b))
    changed = a.clone()
    changed[0, 2, 7, 7] ^= 1  # one bit of one pixel
    assert not torch.equal(tile_digests(a), tile_digests(changed))
    # The same bytes in another shape are other pixels.
    flat = a.reshape(1, 3, 4, 16)
    assert not torch.equal(tile_digests(a), tile_digests(flat))
    assert tile_digests(tiles(1, 2, 1)).shape == (3, 2)


def test_a_repeated_tile_is_encoded_once_and_every_tile_gets_its_own_rows():
    cache, encoder = TileEmbeddingCache(8, TOKENS, HIDDEN, torch.float32), Encoder()
    batch = tiles(1, 2, 1, 3, 2, 1)  # a document's blank tiles repeat within one image
    run(cache, encoder, batch)
    assert encoder.encoded() == sums(tiles(1, 2, 3))
    assert (cache.hits, cache.misses) == (3, 3)


def test_tiles_seen_before_are_not_encoded_again():
    cache, encoder = TileEmbeddingCache(8, TOKENS, HIDDEN, torch.float32), Encoder()
    run(cache, encoder, tiles(1, 2, 3))
    run(cache, encoder, tiles(3, 4, 1))  # the thumbnail of another budget, a resent image
    assert encoder.batches == [sums(tiles(1, 2, 3)), sums(tiles(4))]
    run(cache, encoder, tiles(2, 4))
    assert len(encoder.batches) == 2, "every tile was stored: nothing to encode"


def test_the_least_recently_used_tile_goes_first():
    cache, encoder = TileEmbeddingCache(2, TOKENS, HIDDEN, torch.float32), Encoder()
    run(cache, encoder, tiles(1))
    run(cache, encoder, tiles(2))
    run(cache, encoder, tiles(1))  # a hit: 1 is now newer than 2
    run(cache, encoder, tiles(3))  # full: 2 goes
    encoder.batches.clear()
    run(cache, encoder, tiles(1, 3))
    assert encoder.batches == []
    run(cache, encoder, tiles(2))
    assert encoder.encoded() == sums(tiles(2))


def test_a_call_with_more_new_tiles_than_slots_keeps_the_newest():
    cache, encoder = TileEmbeddingCache(2, TOKENS, HIDDEN, torch.float32), Encoder()
    run(cache, encoder, tiles(1, 2, 3, 4, 5))
    encoder.batches.clear()
    run(cache, encoder, tiles(4, 5))
    assert encoder.batches == []
    run(cache, encoder, tiles(1))
    assert encoder.encoded() == sums(tiles(1))


def test_hits_come_back_in_the_store_dtype_unchanged():
    cache = TileEmbeddingCache(4, TOKENS, HIDDEN, torch.bfloat16)
    batch = tiles(1, 2)
    first = cache.embed(batch, tile_digests(batch), lambda b: Encoder.expected(b).to(torch.bfloat16))
    again = cache.embed(batch, tile_digests(batch), lambda b: 1 / 0)  # must not encode
    assert again.dtype == torch.bfloat16 and torch.equal(first, again)


def test_sized_by_memory():
    per_tile = TOKENS * HIDDEN * 4
    assert TileEmbeddingCache.sized(per_tile * 10 / 2**20, TOKENS, HIDDEN, torch.float32).slots == 10
    assert TileEmbeddingCache.sized(per_tile * 10 / 2**20, TOKENS, HIDDEN, torch.bfloat16).slots == 20
    assert TileEmbeddingCache.sized(0, TOKENS, HIDDEN, torch.float32) is None


def test_a_store_built_elsewhere_follows_the_tiles():
    cache, encoder = TileEmbeddingCache(4, TOKENS, HIDDEN, torch.float32, device="meta"), Encoder()
    run(cache, encoder, tiles(1, 2))
    assert cache.store.device.type == "cpu"
    run(cache, encoder, tiles(1))
    assert encoder.encoded() == sums(tiles(1, 2))
