"""RegMean statistics: the Gram matrix G = XᵀX / n of the inputs of every ``nn.Linear`` of a model, n the number of
input rows (tokens that are not padding; for layers that see one vector per example, the examples).

Inputs are caught with forward pre-hooks and added into one float32 ``[in, in]`` accumulator per layer. The result
is keyed by the layer's weight name and shaped ``[1, in, in]``: a shape no weight has, so the merge engine always
hands the merge method the whole matrix (it row-slices only statistics shaped like the weight).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from merginguriel.data.loaders import pad_batch


@torch.no_grad()
def gram_matrices(
    model: torch.nn.Module,
    rows: Sequence[Sequence[int]],
    pad_id: int,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
) -> dict[str, torch.Tensor]:
    """``{"<linear>.weight": [1, in, in]}`` mean Gram matrices of every linear layer's inputs over ``rows``."""
    if not rows:
        raise ValueError("no examples to compute Gram matrices on")
    model = model.to(device).eval()
    grams: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    state: dict[str, torch.Tensor] = {}
    handles = []

    def catch(name: str, in_features: int):
        def hook(module, args) -> None:
            x = args[0]
            mask = state["mask"]
            if x.dim() == 3 and x.shape[:2] == mask.shape:
                x = x[mask]  # drop padding tokens
            x = x.reshape(-1, in_features).float()
            grams[name].addmm_(x.T, x)
            counts[name] += x.shape[0]

        return hook

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            key = f"{name}.weight"
            grams[key] = torch.zeros(module.in_features, module.in_features, device=device)
            counts[key] = 0
            handles.append(module.register_forward_pre_hook(catch(key, module.in_features)))
    try:
        for start in range(0, len(rows), batch_size):
            batch = pad_batch(rows[start : start + batch_size], pad_id)
            ids, attn = batch["input_ids"].to(device), batch["attention_mask"].to(device)
            state["mask"] = attn.bool()
            model(input_ids=ids, attention_mask=attn)
    finally:
        for h in handles:
            h.remove()
    return {k: (g / max(1, counts[k])).unsqueeze(0).cpu() for k, g in grams.items()}
