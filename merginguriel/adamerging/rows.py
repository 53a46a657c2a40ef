"""Rows of the word-embedding matrix read straight from the checkpoints' safetensors files, on demand.

XLM-R-base's word embedding is 250,002 × 768 (69% of the model). A batch of utterances uses a few hundred of those
rows, so AdaMerging keeps the matrix of the base and of every source on disk and reads, per step, only the rows of
the batch's tokens: each matrix is memory-mapped read-only and the rows are gathered with one ``index_select``; the
touched pages are unmapped again right after (``MADV_DONTNEED``; they stay in the OS page cache, shared by every DDP
rank on a machine), so resident memory holds one batch's rows at a time. The full matrix, needed once to write the merged model,
is read in blocks with ``os.pread`` instead, so writing does not make the whole mapping resident.
"""

from __future__ import annotations

import mmap
import os
import warnings
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch


class TensorLocation(NamedTuple):
    """Where a checked checkpoint holds a tensor: its safetensors file, the absolute byte offset of its data, its dtype
    and its shape (merginguriel.merging.checkpoint.TensorInfo has them)."""

    file: str
    offset: int
    dtype: torch.dtype
    shape: tuple[int, ...]


class FileRows:
    """Reads rows of one tensor from the base and the K sources (``locations``: the base's first; all the same shape)."""

    def __init__(self, name: str, locations: Sequence[TensorLocation]):
        self.name = name
        self._where: list[tuple[str, int, torch.dtype]] = [(str(loc.file), loc.offset, loc.dtype) for loc in locations]
        self.shape = tuple(locations[0].shape)
        self._fds: dict[str, int] = {}

        self._maps: dict[int, tuple[mmap.mmap, torch.Tensor]] = {}

    def __getstate__(self) -> dict:  # descriptors and mappings do not travel (ddp_spawn pickles the module)
        return {**self.__dict__, "_fds": {}, "_maps": {}}

    def __del__(self) -> None:
        self._maps = {}
        for fd in getattr(self, "_fds", {}).values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = {}

    def _matrix(self, which: int) -> torch.Tensor:
        """Checkpoint ``which``'s matrix as a read-only tensor over a memory mapping (nothing is read yet)."""
        if which not in self._maps:
            file, start, dtype = self._where[which]
            mm = mmap.mmap(self._fd(file), 0, access=mmap.ACCESS_READ)
            if hasattr(mm, "madvise") and hasattr(mmap, "MADV_RANDOM"):
                mm.madvise(mmap.MADV_RANDOM)  # rows are scattered: no read-ahead around each one
            with warnings.catch_warnings():  # the tensor is only ever read (index_select copies the rows)
                warnings.simplefilter("ignore", UserWarning)
                t = torch.frombuffer(mm, dtype=dtype, count=self.shape[0] * self.shape[1], offset=start)
            self._maps[which] = (mm, t.view(self.shape))
        return self._maps[which][1]

    @property
    def num_sources(self) -> int:
        return len(self._where) - 1

    def _fd(self, file: str) -> int:
        if file not in self._fds:
            self._fds[file] = os.open(file, os.O_RDONLY)
        return self._fds[file]

    def read(self, which: int, rows: torch.Tensor) -> torch.Tensor:
        """Rows ``rows`` (sorted, unique) of checkpoint ``which`` (0 = base, i = source i), as float32 ``[len(rows), H]``."""
        file, start, dtype = self._where[which]
        width = self.shape[1]
        row_bytes = width * torch.empty((), dtype=dtype).element_size()
        fd = self._fd(file)
        ids = rows.tolist()
        chunks = []
        i = 0
        while i < len(ids):  # one read per run of consecutive rows
            j = i
            while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
                j += 1
            n = (j - i + 1) * row_bytes
            chunks.append(os.pread(fd, n, start + ids[i] * row_bytes))
            i = j + 1
        raw = bytearray(b"".join(chunks))
        if not raw:
            return torch.zeros(0, width)
        return torch.frombuffer(raw, dtype=dtype).view(len(ids), width).float()

    def gather(self, rows: torch.Tensor, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """The base's rows ``[U, H]`` (float32) and the task-vector rows ``[K, U, H]`` (``dtype``) for token ids ``rows``."""
        base = self._matrix(0).index_select(0, rows).float()
        tvs = torch.stack([self._matrix(i + 1).index_select(0, rows).float() - base for i in range(self.num_sources)])
        self._release()
        return base, tvs.to(dtype)

    def _release(self) -> None:
        """Unmap the pages the gather touched (they stay in the OS page cache), so the process's resident memory
        does not grow with the number of distinct tokens seen."""
        for mm, _ in self._maps.values():
            if hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
                mm.madvise(mmap.MADV_DONTNEED)

    def blocks(self, block_rows: int = 16384) -> Iterator[tuple[int, int]]:
        """Row ranges covering the whole matrix."""
        for a in range(0, self.shape[0], block_rows):
            yield a, min(self.shape[0], a + block_rows)
