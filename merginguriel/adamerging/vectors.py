"""Task vectors for AdaMerging, loaded once and stacked per tensor: ``tv[name]`` is ``[K, *shape]`` (source i at row i).

Sources are read one safetensors file at a time, tensor by tensor, and subtracted from the base straight into the
stacked buffer, so loading never holds more than the base, the stacked task vectors and one source tensor.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from merginguriel.errors import InputError
from merginguriel.io.hashing import weight_files


def load_task_vectors(
    base_params: dict[str, torch.Tensor],
    sources: Sequence[str | os.PathLike],
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> dict[str, torch.Tensor]:
    """Stacked task vectors ``{name: [K, *shape]}`` for every name in ``base_params`` (``θ_i − θ_b`` in ``dtype``)."""
    from safetensors import safe_open

    k = len(sources)
    tvs = {
        name: torch.empty((k, *p.shape), dtype=dtype, device=device) for name, p in base_params.items()
    }
    for i, src in enumerate(sources):
        for f in weight_files(src):
            with safe_open(str(f), framework="pt", device="cpu") as fh:
                for name in fh.keys():
                    if name not in tvs:
                        continue
                    t = fh.get_tensor(name).to(device=device, dtype=torch.float32)
                    t.sub_(base_params[name].to(device=device, dtype=torch.float32))
                    tvs[name][i].copy_(t)
                    del t
    return tvs


@torch.no_grad()
def ties_process(tvs: dict[str, torch.Tensor], density: float) -> None:
    """AdaMerging++'s preprocessing, in place: trim each source's task vector to its top ``density`` fraction of
    magnitudes over the whole model (TIES, global scope), elect the sign of the summed trimmed vectors, and zero the
    entries that disagree with the elected sign."""
    if not 0.0 < density <= 1.0:
        raise InputError(f"ties_density must be in (0, 1], got {density}")
    names = list(tvs)
    k = next(iter(tvs.values())).shape[0] if tvs else 0
    for i in range(k):
        total = sum(tvs[n][i].numel() for n in names)
        keep = max(1, int(round(density * total)))
        if keep < total:
            # The k-th largest magnitude over the whole model, from one flattened copy of this source's vector.
            flat = torch.cat([tvs[n][i].reshape(-1).abs().float() for n in names])
            threshold = torch.kthvalue(flat, total - keep + 1).values
            del flat
            for n in names:
                row = tvs[n][i]
                row.masked_fill_(row.abs() < threshold, 0)
    for n in names:
        elected = torch.sign(tvs[n].float().sum(0))
        tvs[n].masked_fill_(torch.sign(tvs[n]) != elected.unsqueeze(0).to(tvs[n].dtype), 0)
