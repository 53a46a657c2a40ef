"""Writing the merged weights as safetensors while they are computed, so the merged model is never held in memory.

Every tensor's name, shape and dtype is known before the merge starts (they are the base's), so the header, and the
split into shards when the model is larger than ``shard_bytes``, are fixed up front and each block is written at its
offset as soon as it is merged. The files are ordinary safetensors (``model.safetensors``, or
``model-0000i-of-0000n.safetensors`` plus ``model.safetensors.index.json`` as ``save_pretrained`` writes them).
"""

from __future__ import annotations

import json
import math
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from merginguriel.merging.checkpoint import DTYPE_CODES

SHARD_BYTES = 2 * 1024**3


@dataclass
class _Slot:
    file: int
    start: int  # absolute byte offset of the tensor in its file
    row_bytes: int
    dtype: torch.dtype
    shape: tuple[int, ...]


class SafetensorsWriter:
    """Pre-laid-out safetensors file(s) in ``folder``; ``write(name, start_row, tensor)`` fills rows in place."""

    def __init__(self, folder: Path, tensors: list[tuple[str, tuple[int, ...], torch.dtype]], shard_bytes: int = SHARD_BYTES):
        self.folder = Path(folder)
        sizes = [math.prod(shape) * torch.empty((), dtype=dt).element_size() for _, shape, dt in tensors]
        shards: list[list[int]] = [[]]
        used = 0
        for i, size in enumerate(sizes):
            if shards[-1] and used + size > shard_bytes:
                shards.append([])
                used = 0
            shards[-1].append(i)
            used += size
        n = len(shards)
        self.names = (
            ["model.safetensors"] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        )
        self.slots: dict[str, _Slot] = {}
        self.handles = []
        self.written: dict[str, int] = {}
        weight_map = {}
        for fi, members in enumerate(shards):
            header: dict = {"__metadata__": {"format": "pt"}}
            offset = 0
            for i in members:
                name, shape, dt = tensors[i]
                header[name] = {"dtype": DTYPE_CODES[dt], "shape": list(shape), "data_offsets": [offset, offset + sizes[i]]}
                offset += sizes[i]
            raw = json.dumps(header, separators=(",", ":")).encode()
            raw += b" " * (-len(raw) % 8)
            data_start = 8 + len(raw)
            for i in members:
                name, shape, dt = tensors[i]
                row_bytes = sizes[i] // shape[0] if shape and shape[0] else sizes[i]
                self.slots[name] = _Slot(fi, data_start + header[name]["data_offsets"][0], row_bytes, dt, tuple(shape))
                weight_map[name] = self.names[fi]
            fh = open(self.folder / self.names[fi], "wb")
            fh.write(len(raw).to_bytes(8, "little") + raw)
            fh.truncate(data_start + offset)
            self.handles.append(fh)
        self.total = sum(sizes)
        self.weight_map = weight_map
        self._error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=2)  # at most two merged blocks wait for the disk
        self._thread = threading.Thread(target=self._drain, name="safetensors-writer", daemon=True)
        self._thread.start()

    def write(self, name: str, start_row: int, values: torch.Tensor) -> None:
        """Queue ``values`` (rows from ``start_row`` of tensor ``name``); a background thread writes them, so the
        disk write overlaps the next block's reading and merging (file writes release the GIL)."""
        slot = self.slots[name]
        data = values.detach().to("cpu", slot.dtype).contiguous()
        if self._error is not None:
            raise self._error
        self._queue.put((name, start_row, data))

    def _drain(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if self._error is None:
                try:
                    self._write_now(*job)
                except BaseException as err:  # re-raised in the merging thread
                    self._error = err

    def _stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _write_now(self, name: str, start_row: int, data: torch.Tensor) -> None:
        slot = self.slots[name]
        fh = self.handles[slot.file]
        fh.seek(slot.start + start_row * slot.row_bytes)
        buf = data.reshape(-1).view(torch.uint8).numpy() if data.numel() else b""
        fh.write(memoryview(buf))
        self.written[name] = self.written.get(name, 0) + data.numel()

    def close(self) -> None:
        self._stop()
        if self._error is not None:
            raise self._error
        for fh in self.handles:
            fh.close()
        missing = [n for n, s in self.slots.items() if self.written.get(n, 0) != math.prod(s.shape)]
        if missing:
            raise RuntimeError(f"merge wrote incomplete tensors: {missing[:5]}")
        if len(self.names) > 1:
            index = {"metadata": {"total_size": self.total}, "weight_map": self.weight_map}
            (self.folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")

    def abort(self) -> None:
        self._stop()
        for fh in self.handles:
            fh.close()
