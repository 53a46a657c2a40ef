"""The diagonal empirical Fisher of a model: F = mean over examples of (∂ log p(y|x) / ∂θ)², y sampled from the
model's prediction or set to its argmax (no labels are read).

Every example gets its own backward pass and its squared gradient is added, tensor by tensor as soon as autograd
has accumulated it (a post-accumulate-grad hook), into ONE running buffer per parameter on the compute device; the
gradient itself is freed right away. The word-embedding matrix is not differentiated as a whole: the example's
embedding rows are a leaf tensor, and the squared per-token-type row gradients are added into the buffer's rows, so
no full-size embedding gradient (69% of XLM-R-base) ever exists. Peak memory is therefore about the model plus one
buffer plus one example's activations.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from merginguriel.adamerging.module import position_ids_for


def fisher_diagonal(
    model: torch.nn.Module,
    rows: Sequence[Sequence[int]],
    label: str = "sample",
    seed: int = 42,
    device: str | torch.device = "cpu",
) -> dict[str, torch.Tensor]:
    """``{parameter name: diagonal Fisher}`` (float32, on CPU) of ``model`` over the token id ``rows``.

    Args:
        model: a sequence classifier (its logits are the prediction); moved to ``device`` and left in eval mode.
        rows: one list of token ids per example (no padding).
        label: ``sample`` (y drawn from the model's softmax, seeded) or ``argmax``.
        seed: seed of the label sampling.
        device: where the model, the gradients and the running buffer live.
    """
    if label not in ("sample", "argmax"):
        raise ValueError(f"label must be 'sample' or 'argmax', got {label!r}")
    if not rows:
        raise ValueError("no examples to compute the Fisher information on")
    model = model.to(device).eval()
    emb = model.get_input_embeddings().weight
    params = dict(model.named_parameters())
    emb_name = next(n for n, p in params.items() if p is emb)
    buffers = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    handles = []
    saved = {n: p.requires_grad for n, p in params.items()}

    def accumulate(name: str):
        def hook(p: torch.Tensor) -> None:
            buffers[name].addcmul_(p.grad, p.grad)
            p.grad = None

        return hook

    try:
        for n, p in params.items():
            p.requires_grad_(n != emb_name)
            if n != emb_name:
                handles.append(p.register_post_accumulate_grad_hook(accumulate(n)))
        gen = torch.Generator().manual_seed(seed)
        for row in rows:
            ids = torch.as_tensor(list(row), dtype=torch.long, device=device).unsqueeze(0)
            embeds = emb.detach()[ids].requires_grad_(True)
            kwargs = {"inputs_embeds": embeds, "attention_mask": torch.ones_like(ids)}
            positions = position_ids_for(model, ids)
            if positions is not None:
                kwargs["position_ids"] = positions
            logp = torch.log_softmax(model(**kwargs).logits.float(), dim=-1)[0]
            if label == "argmax":
                y = int(logp.argmax())
            else:
                y = int(torch.multinomial(logp.detach().exp().cpu(), 1, generator=gen))
            logp[y].backward()
            # Rows of the embedding gradient: the sum of the gradients of every occurrence of a token, then squared.
            uniq, inverse = ids[0].unique(return_inverse=True)
            per_token = torch.zeros(len(uniq), emb.shape[1], device=device).index_add_(0, inverse, embeds.grad[0].float())
            buffers[emb_name].index_add_(0, uniq, per_token.square())
        pad = getattr(model.get_input_embeddings(), "padding_idx", None)
        if pad is not None:
            buffers[emb_name][pad] = 0  # nn.Embedding never updates its padding row
    finally:
        for h in handles:
            h.remove()
        for n, p in params.items():
            p.requires_grad_(saved[n])
            p.grad = None
    n = float(len(rows))
    # In place: a divided copy would hold a second model-sized buffer at the very end.
    return {name: buf.div_(n).cpu() for name, buf in buffers.items()}
