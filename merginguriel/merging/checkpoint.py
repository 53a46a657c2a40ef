"""Reading checkpoints tensor by tensor: safetensors headers (checked for truncation up front) and row blocks of tensors.

The header is parsed (and checked against the file size) up front; tensors, or row ranges of them, are then copied out
of a pre-populated private map of just the bytes a unit needs, one file at a time, closed right after. Measured on
XLM-R-base files here, this is far faster than touching ``safetensors.safe_open``'s lazy memory map (every first touch
of a mapped page is a page fault, and mapped pages stay resident while the file is open) and 5x faster than read(),
and memory does not grow with the number of sources.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Optional

import torch

from merginguriel.errors import InputError

_POPULATE = getattr(mmap, "MAP_POPULATE", 0)  # Linux; elsewhere the map fills lazily
_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}
DTYPE_CODES = {v: k for k, v in _DTYPES.items()}
FLOAT_CODES = {"F64", "F32", "F16", "BF16"}
INDEX = "model.safetensors.index.json"  # a sharded folder's map of tensor -> shard file


class Item(NamedTuple):
    """A block of a tensor: rows ``start`` to ``stop`` (excluded) of dim 0 of tensor ``name`` (``(0, 1)`` for a 0-d
    tensor)."""

    name: str
    start: int
    stop: int


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives and what it is."""

    name: str
    file: Path
    dtype: str  # safetensors code, e.g. "F32"
    shape: tuple[int, ...]
    offset: int  # absolute byte offset of its data in the file

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_CODES

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]


def read_header(file: Path) -> tuple[dict, int]:
    """Parse a safetensors header, check that the file holds every byte the header promises; return it and where data starts."""
    try:
        size = os.path.getsize(file)
        with open(file, "rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                raise ValueError("shorter than the 8-byte header length")
            (n,) = struct.unpack("<Q", raw)
            if n > size - 8 or n > 100_000_000:
                raise ValueError(f"header length {n} exceeds the file size {size}")
            header = json.loads(fh.read(n))
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise InputError(
            f"{file} is not a readable safetensors file ({err}); it is corrupt or truncated: re-export or re-copy it"
        ) from None
    header.pop("__metadata__", None)
    end = max((int(v["data_offsets"][1]) for v in header.values()), default=0)
    if 8 + n + end > size:
        raise InputError(
            f"{file} is truncated: its header needs {8 + n + end} bytes but the file has {size}; "
            "the copy or save was interrupted: re-export or re-copy it"
        )
    for name, meta in header.items():
        if meta.get("dtype") not in _DTYPES:
            raise InputError(f"{file}: tensor {name} has unsupported dtype {meta.get('dtype')!r}")
    return header, 8 + n


class Checkpoint:
    """The safetensors weights of one Hugging Face folder (a single file or shards), indexed by tensor name."""

    def __init__(self, folder: Path, role: str):
        self.folder = Path(folder)
        self.role = role
        if not self.folder.is_dir():
            raise InputError(f"{role} {self.folder} does not exist (or is not a folder); check the path")
        index = self._index()
        files = sorted(self.folder.glob("*.safetensors")) if index is None else sorted(set(index.values()))
        if not files:
            raise InputError(
                f"{role} {self.folder} holds no .safetensors weights; save it with save_pretrained(..., "
                "safe_serialization=True) (merginguriel fit does)"
            )
        self.files = files
        self.tensors: dict[str, TensorInfo] = {}
        for f in files:
            header, data_start = read_header(f)
            for name, meta in header.items():
                if name in self.tensors:
                    raise InputError(f"{role} {self.folder}: tensor {name} appears in two weight files; remove stale shards")
                self.tensors[name] = TensorInfo(
                    name, f, meta["dtype"], tuple(meta["shape"]), data_start + int(meta["data_offsets"][0])
                )
        if index is not None:
            self._check_index(index)

    def _index(self) -> Optional[dict[str, Path]]:
        """A sharded folder's ``model.safetensors.index.json``: tensor -> the shard that holds it, every shard it
        names present and every shard present named (None for a folder without an index)."""
        path = self.folder / INDEX
        if not path.is_file():
            return None
        from merginguriel.io.jsonfile import read_json

        fix = "re-copy the folder, or export the model again"
        loaded = read_json(path, fix)
        weight_map = loaded.get("weight_map") if isinstance(loaded, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise InputError(f"{path} has no weight_map (tensor -> shard file); {fix}")
        shards = {name: self.folder / str(name) for name in set(weight_map.values())}
        missing = sorted(name for name, f in shards.items() if not f.is_file())
        if missing:
            raise InputError(f"{self.role} {self.folder}: shard(s) {', '.join(missing)} named by {INDEX} are missing "
                             f"({len(shards) - len(missing)} of {len(shards)} present); the copy is incomplete: {fix}")
        unlisted = sorted(f.name for f in self.folder.glob("*.safetensors") if f.name not in shards)
        if unlisted:
            raise InputError(f"{self.role} {self.folder}: {', '.join(unlisted)} is not listed in {INDEX} (a stale shard "
                             f"of another save?); remove it, or {fix}")
        return {tensor: shards[str(name)] for tensor, name in weight_map.items()}

    def _check_index(self, index: dict[str, Path]) -> None:
        """Every tensor is where the index says, and the index names every tensor the shards hold."""
        for tensor, shard in index.items():
            info = self.tensors.get(tensor)
            if info is None or info.file != shard:
                where = f"it is in {info.file.name}" if info is not None else "no shard holds it"
                raise InputError(f"{self.role} {self.folder}: {INDEX} puts tensor {tensor} in {shard.name}, but {where}; "
                                 f"the index and the shards are from different saves: re-copy or export it again")
        extra = sorted(set(self.tensors) - set(index))
        if extra:
            raise InputError(f"{self.role} {self.folder}: the shards hold tensor(s) {', '.join(extra[:3])} that {INDEX} "
                             "does not list; the index and the shards are from different saves: re-copy or export it again")

    def config(self) -> dict:
        path = self.folder / "config.json"
        if not path.is_file():
            raise InputError(f"{self.role} {self.folder} has no config.json; it is not a Hugging Face model folder")
        from merginguriel.io.jsonfile import read_json

        return read_json(path, f"fix the file, or export the {self.role} again (save_pretrained writes a valid one)")

    def read(self, items: Iterable[Item], out: dict[Item, torch.Tensor] | None = None) -> dict[Item, torch.Tensor]:
        """Read row ranges (:class:`Item`: rows of dim 0; a 0-d tensor is read whole), one file open at a time.

        With ``out`` (item -> a CPU tensor of the block's shape), each block lands in its given tensor (read straight
        into it when the dtypes agree, converted otherwise) and that tensor is returned.
        """
        by_file: dict[Path, list[Item]] = {}
        for item in map(Item._make, items):
            by_file.setdefault(self.tensors[item.name].file, []).append(item)
        result: dict[Item, torch.Tensor] = {}
        for file, group in by_file.items():
            spans = {item: self._span(item) for item in group}
            lo = min(a for a, _ in spans.values()) // mmap.ALLOCATIONGRANULARITY * mmap.ALLOCATIONGRANULARITY
            hi = max(b for _, b in spans.values())
            if hi <= lo:
                for item in group:
                    result[item] = self._empty(item, out)
                continue
            with open(file, "rb") as fh:
                # one private, pre-populated map of just this unit's bytes: the kernel maps the cached pages in one go
                # (5x faster here than read() copying them, and than page faults on a lazy map); every tensor is copied
                # out before the map closes, so nothing keeps file pages resident afterwards
                mm = mmap.mmap(fh.fileno(), hi - lo, flags=mmap.MAP_PRIVATE | _POPULATE, prot=mmap.PROT_READ, offset=lo)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # a read-only buffer: we only copy out of it
                    for item, (a, b) in spans.items():
                        info = self.tensors[item.name]
                        shape = (item.stop - item.start, *info.shape[1:]) if info.shape else ()
                        if b == a:
                            result[item] = self._empty(item, out)
                            continue
                        view = torch.frombuffer(mm, dtype=torch.uint8, count=b - a, offset=a - lo).view(info.torch_dtype).reshape(shape)
                        into = out.get(item) if out is not None else None
                        result[item] = into.copy_(view) if into is not None else view.clone()
                        del view
            finally:
                mm.close()
        return result

    def _span(self, item: Item) -> tuple[int, int]:
        """Absolute byte range of the item's rows."""
        info = self.tensors[item.name]
        size = torch.empty((), dtype=info.torch_dtype).element_size()
        if not info.shape:
            return info.offset, info.offset + size
        row = math.prod(info.shape[1:]) * size
        return info.offset + item.start * row, info.offset + item.stop * row

    def _empty(self, item: Item, out) -> torch.Tensor:
        info = self.tensors[item.name]
        if out is not None and item in out:
            return out[item]
        return torch.empty((item.stop - item.start, *info.shape[1:]) if info.shape else (), dtype=info.torch_dtype)
