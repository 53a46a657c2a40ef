"""Task-vector cosine between source models, streamed: never all task vectors (nor two whole models) in memory.

For every tensor, and for large tensors every block of rows, we read the base block once and the same block of each
model (opening one model file at a time), stack the N task-vector blocks and add their Gram matrix ``T Tᵀ`` to an N x N
float64 accumulator. The diagonal gives the squared norms, so ``cos(i, j) = G_ij / sqrt(G_ii G_jj)``. Peak memory is
about N blocks plus one base block, whatever the model size (XLM-R-base's 250k x 768 embedding is read in slices).
"""

from __future__ import annotations

import fnmatch
import math
import os
from pathlib import Path
from typing import Optional

import pandas as pd
import torch

from merginguriel.errors import InputError
from merginguriel.io.hashing import weight_files
from merginguriel.io.manifest import read_manifest

DEFAULT_BLOCK_ELEMENTS = 4 << 20  # 4M elements per model block: 32 MB in float64


def _tensor_index(folder: Path) -> dict[str, tuple[Path, list[int], str]]:
    """name -> (safetensors file, shape, dtype) without loading any tensor."""
    from safetensors import safe_open

    index = {}
    for f in weight_files(folder):
        with safe_open(str(f), framework="pt") as fh:
            for name in fh.keys():
                sl = fh.get_slice(name)
                index[name] = (f, list(sl.get_shape()), str(sl.get_dtype()))
    return index


def _read_block(path: Path, name: str, start: int, stop: int, ndim: int) -> torch.Tensor:
    """Rows [start, stop) of a tensor (the whole tensor when it is 0-d), as float64; the file is closed on return."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        if ndim == 0:
            t = fh.get_tensor(name)
        else:
            t = fh.get_slice(name)[start:stop]
    return t.to(torch.float64).reshape(-1)


def _check_same_base(base: Path, models: list[Path]) -> None:
    """Fine-tuned manifests that record a base must record this one (task vectors against another base are meaningless)."""
    try:
        base_hash = read_manifest(base).get("hash")
    except FileNotFoundError:
        return
    for m in models:
        try:
            ref = read_manifest(m).get("base")
        except FileNotFoundError:
            continue
        if isinstance(ref, dict) and base_hash and ref.get("hash") and ref["hash"] != base_hash:
            raise InputError(
                f"{m} was fine-tuned from a different base (hash {ref['hash'][:12]}) than {base} ({base_hash[:12]}); "
                "task vectors must share one base: pass the base its manifest records"
            )


def task_vector_gram(
    base: str | os.PathLike,
    models: list[str | os.PathLike],
    exclude: Optional[list[str]] = None,
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
) -> torch.Tensor:
    """N x N float64 matrix of task-vector dot products ``τ_i · τ_j`` over every shared tensor not matching ``exclude``
    (fnmatch patterns on tensor names)."""
    base = Path(base)
    models = [Path(m) for m in models]
    if not models:
        raise InputError("no models given for the compatibility matrix; pass at least one fine-tuned checkpoint folder")
    _check_same_base(base, models)
    base_index = _tensor_index(base)
    indexes = [_tensor_index(m) for m in models]
    names = []
    for name, (_, shape, dtype) in base_index.items():
        if exclude and any(fnmatch.fnmatchcase(name, p) for p in exclude):
            continue
        if not (dtype.startswith("F") or dtype.startswith("BF")):
            continue  # integer buffers (position ids) are not learned
        for m, idx in zip(models, indexes):
            if name not in idx:
                raise InputError(f"{m} has no tensor {name!r} that the base has; it is not a fine-tune of {base}")
            if idx[name][1] != shape:
                raise InputError(
                    f"{m}: tensor {name!r} has shape {idx[name][1]}, the base has {shape}; only fine-tunes of the same base compare"
                )
        names.append(name)
    if not names:
        raise InputError(f"no tensors left to compare after exclude={exclude}; loosen the patterns")
    n = len(models)
    gram = torch.zeros(n, n, dtype=torch.float64)
    for name in names:
        path, shape, _ = base_index[name]
        rows = shape[0] if shape else 1
        row_elems = math.prod(shape[1:]) if len(shape) > 1 else 1
        step = max(1, block_elements // max(row_elems, 1))
        for start in range(0, rows, step):
            stop = min(rows, start + step)
            b = _read_block(path, name, start, stop, len(shape))
            block = torch.empty(n, b.numel(), dtype=torch.float64)
            for i, idx in enumerate(indexes):
                block[i] = _read_block(idx[name][0], name, start, stop, len(shape))
                block[i] -= b
            del b
            gram += block @ block.T
            del block
    return gram


def cosine_from_gram(gram: torch.Tensor) -> torch.Tensor:
    """Cosines from a Gram matrix; a zero task vector (a model equal to the base) is an InputError."""
    norms = gram.diagonal().clamp_min(0).sqrt()
    if (norms == 0).any():
        raise InputError("a model equals the base (zero task vector), so its cosine is undefined; leave it out")
    return gram / norms[:, None] / norms[None, :]


def task_vector_cosine(
    base: str | os.PathLike,
    models: dict[str, str | os.PathLike],
    exclude: Optional[list[str]] = None,
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
) -> pd.DataFrame:
    """Task-vector cosine matrix of ``{locale: checkpoint}`` models (square DataFrame, index = columns = locales)."""
    labels = list(models)
    cos = cosine_from_gram(task_vector_gram(base, [models[k] for k in labels], exclude, block_elements))
    return pd.DataFrame(cos.numpy(), index=labels, columns=labels)
