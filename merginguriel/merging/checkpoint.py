"""Reading checkpoints tensor by tensor: safetensors headers (checked for truncation up front) and row blocks of tensors.

The header is parsed (and checked against the file size) up front; tensors, or row ranges of them, are then read with
plain positioned reads into fresh buffers, one file open at a time. Measured on XLM-R-base files here, this is several
times faster than touching ``safetensors.safe_open``'s memory map (every first touch of a mapped page is a page fault,
and mapped pages count as resident while the file is open), and memory does not grow with the number of sources.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from merginguriel.errors import InputError

_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}
DTYPE_CODES = {v: k for k, v in _DTYPES.items()}
FLOAT_CODES = {"F64", "F32", "F16", "BF16"}


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
        files = sorted(self.folder.glob("*.safetensors"))
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

    def config(self) -> dict:
        path = self.folder / "config.json"
        if not path.is_file():
            raise InputError(f"{self.role} {self.folder} has no config.json; it is not a Hugging Face model folder")
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)

    def read(
        self, items: Iterable[tuple[str, int, int]], out: dict[tuple[str, int, int], torch.Tensor] | None = None
    ) -> dict[tuple[str, int, int], torch.Tensor]:
        """Read row ranges ``(name, start, stop)`` (rows of dim 0; a 0-d tensor is read whole), one file open at a time.

        With ``out`` (item -> a CPU tensor of the block's shape), each block lands in its given tensor (read straight
        into it when the dtypes agree, converted otherwise) and that tensor is returned.
        """
        by_file: dict[Path, list[tuple[str, int, int]]] = {}
        for item in items:
            by_file.setdefault(self.tensors[item[0]].file, []).append(item)
        result: dict[tuple[str, int, int], torch.Tensor] = {}
        for file, group in by_file.items():
            with open(file, "rb", buffering=0) as fh:
                for item in sorted(group, key=lambda it: (self.tensors[it[0]].offset, it[1])):
                    into = out.get(item) if out is not None else None
                    result[item] = self._read_rows(fh, *item, into=into)
        return result

    def _read_rows(self, fh, name: str, start: int, stop: int, into: torch.Tensor | None = None) -> torch.Tensor:
        info = self.tensors[name]
        dtype = info.torch_dtype
        size = torch.empty((), dtype=dtype).element_size()
        if info.shape:
            row_numel = math.prod(info.shape[1:])
            shape = (stop - start, *info.shape[1:])
        else:
            row_numel, shape, start = 1, (), 0
        direct = into is not None and into.dtype == dtype and into.is_contiguous() and into.device.type == "cpu"
        t = into if direct else torch.empty(shape, dtype=dtype)
        nbytes = t.numel() * size
        if nbytes:
            buf = memoryview(t.view(-1).view(torch.uint8).numpy())
            fh.seek(info.offset + start * row_numel * size)
            got = 0
            while got < nbytes:
                n = fh.readinto(buf[got:])
                if not n:
                    raise InputError(f"{info.file} ended while reading {name}; the file is truncated: re-export or re-copy it")
                got += n
        if into is not None and not direct:
            return into.copy_(t)
        return t
