"""DARE's random drop mask, reproducible per tensor and independent of how the tensor is split into blocks.

The mask of a tensor is drawn in fixed chunks of its flattened elements, each chunk from a generator seeded by
(seed, source key, tensor name, chunk index). A block of rows draws only the chunks it overlaps, so any block size,
any block order and any device give the same mask.
"""

from __future__ import annotations

import hashlib
import math

import torch

CHUNK = 1 << 20


def _chunk_seed(seed: int, key: str, name: str, chunk: int) -> int:
    digest = hashlib.blake2b(f"{seed}|{key}|{name}|{chunk}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def keep_mask(seed: int, key: str, name: str, shape: tuple[int, ...], rows: tuple[int, int], p: float) -> torch.Tensor:
    """Boolean keep-mask (True with probability 1 - p) for rows ``rows`` of tensor ``name`` of full ``shape``."""
    row_numel = math.prod(shape[1:]) if shape else 1
    start, stop = rows[0] * row_numel, rows[1] * row_numel
    parts = []
    for chunk in range(start // CHUNK, (stop - 1) // CHUNK + 1 if stop > start else start // CHUNK):
        lo, hi = chunk * CHUNK, (chunk + 1) * CHUNK
        gen = torch.Generator().manual_seed(_chunk_seed(seed, key, name, chunk))
        draws = torch.rand(min(hi, row_numel * (shape[0] if shape else 1)) - lo, generator=gen)
        parts.append(draws[max(start, lo) - lo : min(stop, hi) - lo])
    u = torch.cat(parts) if parts else torch.empty(0)
    block_shape = (rows[1] - rows[0], *shape[1:]) if shape else ()
    return (u >= p).reshape(block_shape)


def apply_dare(tau: torch.Tensor, mask: torch.Tensor, p: float, rescale: bool) -> torch.Tensor:
    """Drop the masked-out entries of ``tau`` in place and rescale the survivors by 1 / (1 - p)."""
    tau.mul_(mask.to(tau.device))
    if rescale and p > 0:
        tau.div_(1.0 - p)
    return tau
