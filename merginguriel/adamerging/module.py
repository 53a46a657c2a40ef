"""The AdaMerging LightningModule: merge coefficients λ learned by minimising prediction entropy on unlabelled text.

The merged model θ(λ) = θ_b + Σ_i λ_i τ_i is never copied into a module. Every step runs the base architecture through
``torch.func.functional_call`` with the merged tensors as a parameter dict, so autograd reaches λ directly.

Memory: the base model is held once, the task vectors once (stacked ``[K, *shape]``, float32 or bfloat16), both on the
training device. The word-embedding matrix (250k × 768 in XLM-R-base, 69% of the model) is never merged in full:
each step gathers only the rows of the batch's distinct tokens, ``E = W_b[ids] + Σ_i λ_i τ_i[:, ids]``, and feeds
them to the model as ``inputs_embeds``. This is exact (rows outside the batch do not affect the forward pass, and
their gradient with respect to λ is zero), so the result and the coefficient updates are identical to merging the
full matrix; it removes a full-size merged copy and its full-size gradient from every step. Where the rows come from:
``embedding_rows`` (a :class:`~merginguriel.adamerging.rows.FileRows`) reads them from the checkpoint files per step,
so the matrix of the base and of every source never occupies memory at all (the default); without it the embedding
task vectors are held on the device like every other tensor. With ``embedding="frozen"`` the embedding rows use the
initial coefficients and take no part in the optimisation.

Coefficients: ``granularity="task"`` learns λ of shape ``[K]``, shared by every tensor; ``"layer"`` learns ``[K, L]``,
one per source and parameter tensor (the word embedding is one of the L). They are ordinary parameters, so under DDP
the gradients are all-reduced and every rank applies the same Adam step: the coefficients stay identical everywhere.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import lightning as L
import torch
import torch.nn.functional as F


def mean_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy (nats) of the softmax predictions of a batch of logits."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1).mean()


def position_ids_for(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor | None:
    """The position ids the model would derive from ``input_ids`` (RoBERTa-style models number positions from
    ``padding_idx + 1`` and skip padding); ``None`` for models whose default from ``inputs_embeds`` is already right."""
    emb = model.get_input_embeddings()
    owner = next((m for m in model.modules() if getattr(m, "word_embeddings", None) is emb), None)
    fn = getattr(owner, "create_position_ids_from_input_ids", None)
    if fn is None:
        return None
    return fn(input_ids, owner.padding_idx)


class _MergeTensors(torch.autograd.Function):
    """θ_l = base_l + Σ_i λ_{i,l} τ_{i,l} for many tensors l as ONE autograd node.

    Forward: one matrix-vector product per tensor. Backward: ∂L/∂λ_{i,l} = ⟨τ_{i,l}, ∂L/∂θ_l⟩, again one product per
    tensor. Per-tensor autograd nodes would cost several graph nodes per tensor and step; for small models that
    bookkeeping, not arithmetic, dominates the merge.
    """

    @staticmethod
    def forward(ctx, lam: torch.Tensor, columns: list[int], n: int, *tensors: torch.Tensor):
        bases, tvs = tensors[:n], tensors[n:]
        ctx.columns, ctx.lam_shape, ctx.lam_dtype = columns, lam.shape, lam.dtype
        ctx.save_for_backward(*tvs)
        lam2 = lam if lam.dim() == 2 else lam[:, None]
        out = []
        for base, tv, col in zip(bases, tvs, columns):
            flat = tv.reshape(tv.shape[0], -1).t()
            vec = lam2[:, col if lam.dim() == 2 else 0]
            if tv.dtype == base.dtype:
                out.append(torch.addmv(base.reshape(-1), flat, vec.to(base.dtype)).view(base.shape))
            else:
                out.append(base + torch.mv(flat, vec.to(tv.dtype)).view(base.shape).to(base.dtype))
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        tvs = ctx.saved_tensors
        k = tvs[0].shape[0] if tvs else 0
        grad = torch.zeros(ctx.lam_shape, dtype=torch.float32, device=tvs[0].device if tvs else None)
        for tv, g, col in zip(tvs, grads, ctx.columns):
            if g is None:
                continue
            contrib = torch.mv(tv.reshape(k, -1), g.reshape(-1).to(tv.dtype)).float()
            if grad.dim() == 2:
                grad[:, col] += contrib
            else:
                grad += contrib
        return (grad.to(ctx.lam_dtype), None, None, *([None] * (2 * len(tvs))))


class AdaMergingModule(L.LightningModule):
    """Learns merge coefficients over stacked task vectors for one base model.

    Args:
        model: the base model (an ``AutoModelForSequenceClassification``); its parameters are θ_b and stay frozen.
        task_vectors: ``{parameter name: [K, *shape]}`` for every merged parameter (names as in ``model``).
        init: initial coefficient per source, ``[K]``.
        granularity: ``task`` or ``layer``.
        clamp: clamp the coefficients to [0, 1] after every optimiser step.
        lr: Adam learning rate.
        embedding: ``shared`` (learned like any tensor, gathered per batch) or ``frozen`` (fixed at ``init``).
        source_names: a label per source for logs (locales).
        embedding_rows: read the word-embedding rows of the base and the sources from their files per step (the
            embedding is then absent from ``task_vectors`` and the base model's own matrix is released).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        task_vectors: dict[str, torch.Tensor],
        init: Sequence[float],
        granularity: str = "layer",
        clamp: bool = True,
        lr: float = 1e-3,
        embedding: str = "shared",
        source_names: Sequence[str] | None = None,
        embedding_rows=None,
    ):
        super().__init__()
        if granularity not in ("task", "layer"):
            raise ValueError(f"granularity must be 'task' or 'layer', got {granularity!r}")
        if embedding not in ("shared", "frozen"):
            raise ValueError(f"embedding must be 'shared' or 'frozen', got {embedding!r}")
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        params = dict(self.model.named_parameters())
        self.embedding_name = next(n for n, p in params.items() if p is self.model.get_input_embeddings().weight)
        # Held as a plain dict, not buffers: DDP would otherwise broadcast K model copies at every forward.
        self.task_vectors = dict(task_vectors)
        self.tensor_names = list(self.task_vectors)
        self.embedding_rows = embedding_rows
        if embedding_rows is not None:
            self.task_vectors.pop(self.embedding_name, None)
            self.tensor_names = [n for n in self.tensor_names if n != self.embedding_name] + [self.embedding_name]
            emb = self.model.get_input_embeddings()
            # The base's matrix is read from its file like the sources'; the module keeps an empty placeholder.
            emb.weight = torch.nn.Parameter(torch.empty(0, emb.weight.shape[1], dtype=emb.weight.dtype), requires_grad=False)
        k = len(init)
        self.source_names = list(source_names) if source_names else [str(i) for i in range(k)]
        init_t = torch.tensor(list(init), dtype=torch.float32)
        shape = (k,) if granularity == "task" else (k, len(self.tensor_names))
        values = init_t if granularity == "task" else init_t[:, None].expand(shape).clone()
        self.coefficients = torch.nn.Parameter(values)
        self.register_buffer("initial_coefficients", values.clone(), persistent=False)
        self.granularity = granularity
        self.clamp = clamp
        self.lr = lr
        self.embedding = embedding
        owner = next((m for m in self.model.modules() if getattr(m, "word_embeddings", None) is self.model.get_input_embeddings()), None)
        self._positions = getattr(owner, "create_position_ids_from_input_ids", None)
        self._padding_idx = getattr(owner, "padding_idx", None)
        self.strict_loading = False  # checkpoints hold only the coefficients (see on_save_checkpoint)
        self.step_times: list[float] = []  # wall time of every training step of this process (seconds)
        self._step_start = 0.0

    # -- the merged model ---------------------------------------------------------------------------------------
    def _columns(self) -> list[torch.Tensor]:
        """The coefficient vector ``[K]`` of every tensor in ``tensor_names`` order (views of one parameter)."""
        lam = self.coefficients
        cols = [lam] * len(self.tensor_names) if self.granularity == "task" else list(lam.unbind(1))
        if self.embedding == "frozen" and self.embedding_name in self.tensor_names:
            index = self.tensor_names.index(self.embedding_name)
            frozen = self.initial_coefficients
            cols[index] = frozen if self.granularity == "task" else frozen[:, index]
        return cols

    def _ensure_device(self) -> dict[str, torch.Tensor]:
        """Move the task vectors to the coefficients' device (once) and return the base parameters by name."""
        device = self.coefficients.device
        cached = getattr(self, "_base_cache", None)
        if cached is not None and cached[0] == device:
            return cached[1]
        for name, tv in self.task_vectors.items():
            if tv.device != device:
                self.task_vectors[name] = tv.to(device)
        params = dict(self.model.named_parameters())
        self._base_cache = (device, params)
        return params

    @staticmethod
    def _combine(base: torch.Tensor, tv: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        """base + Σ_i lam_i tv_i as one matrix-vector product (no ``[K, *shape]`` temporary, one autograd node)."""
        flat = tv.reshape(tv.shape[0], -1).t()
        if tv.dtype == base.dtype:
            return torch.addmv(base.reshape(-1), flat, lam.to(base.dtype)).view(base.shape)
        return base + torch.mv(flat, lam.to(tv.dtype)).view(base.shape).to(base.dtype)

    def merged_tensor(self, index: int, name: str, base: torch.Tensor) -> torch.Tensor:
        """θ_b + Σ_i λ_i τ_i for one tensor (differentiable in λ)."""
        return self._combine(base, self.task_vectors[name], self._columns()[index])

    def _embedding_rows(self, uniq: torch.Tensor, params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The base's rows and the task vectors' rows (``[K, U, H]``, None when the embedding is not merged)."""
        if self.embedding_rows is not None:
            tv_dtype = next(iter(self.task_vectors.values())).dtype if self.task_vectors else torch.float32
            base_rows, tv_rows = self.embedding_rows.gather(uniq.cpu(), tv_dtype)
            return base_rows.to(uniq.device), tv_rows.to(uniq.device)
        base_rows = params[self.embedding_name].index_select(0, uniq)
        tv = self.task_vectors.get(self.embedding_name)
        return base_rows, (tv.index_select(1, uniq) if tv is not None else None)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits of the merged model on a batch."""
        params = self._ensure_device()
        # The merge itself runs in full precision even under autocast (bf16-mixed): the base's values must not be
        # rounded; the model's forward below is autocast as usual.
        with torch.autocast(device_type=input_ids.device.type, enabled=False):
            cols = self._columns()
            merged = {}
            # Only the rows of the batch's distinct tokens of the embedding are merged (see the module docstring).
            uniq, inverse = input_ids.unique(return_inverse=True)
            base_rows, tv_rows = self._embedding_rows(uniq, params)
            embeds = F.embedding(inverse, base_rows)
            names, columns = [], []
            for index, (lam, name) in enumerate(zip(cols, self.tensor_names)):
                if name == self.embedding_name:
                    # Σ_i λ_i τ_i[token] per position, as one matrix-vector product over the gathered rows: the
                    # gradient reaches λ without a scatter over embedding rows (deterministic on GPUs too).
                    per_position = tv_rows[:, inverse]  # [K, B, T, H]
                    delta = torch.mv(per_position.reshape(per_position.shape[0], -1).t(), lam.to(per_position.dtype))
                    embeds = embeds + delta.view(embeds.shape).to(embeds.dtype)
                else:
                    names.append(name)
                    columns.append(index)
            if names:
                outs = _MergeTensors.apply(
                    self.coefficients, columns, len(names), *[params[n] for n in names], *[self.task_vectors[n] for n in names]
                )
                merged = dict(zip(names, outs))
        kwargs = {"inputs_embeds": embeds, "attention_mask": attention_mask}
        if self._positions is not None:  # as the model derives them from input_ids (see position_ids_for)
            kwargs["position_ids"] = self._positions(input_ids, self._padding_idx)
        out = torch.func.functional_call(self.model, merged, args=(), kwargs=kwargs)
        return out.logits

    @torch.no_grad()
    def merged_state_dict(self) -> dict[str, torch.Tensor]:
        """The full merged parameters θ_b + Σ λ τ (every tensor, the embedding matrix included), on the training device."""
        params = self._ensure_device()
        out = {}
        for index, name in enumerate(self.tensor_names):
            if name == self.embedding_name and self.embedding_rows is not None:
                out[name] = self._merged_embedding_from_files(index)
            else:
                out[name] = self.merged_tensor(index, name, params[name]).detach()
        return out

    def _merged_embedding_from_files(self, index: int) -> torch.Tensor:
        rows = self.embedding_rows
        lam = self._columns()[index].detach().float().cpu()
        out = torch.empty(rows.shape, dtype=torch.float32)
        for a, b in rows.blocks():
            block_rows = torch.arange(a, b)
            base = rows.read(0, block_rows)
            acc = base.clone()
            for i in range(rows.num_sources):
                acc.add_(rows.read(i + 1, block_rows).sub_(base), alpha=float(lam[i]))
            out[a:b] = acc
        return out

    @torch.no_grad()
    def install_merged_weights(self) -> torch.nn.Module:
        """Put θ_b + Σ λ τ into the base model's parameters (once, at the end) and return the model."""
        state = self.merged_state_dict()
        modules = dict(self.model.named_modules())
        for name, p in list(self.model.named_parameters()):
            if name not in state:
                continue
            value = state.pop(name)
            if p.shape == value.shape:
                p.copy_(value.to(device=p.device, dtype=p.dtype))
            else:  # the embedding placeholder: a new parameter holding the full merged matrix
                owner, _, attr = name.rpartition(".")
                setattr(modules[owner], attr, torch.nn.Parameter(value.to(device=p.device, dtype=p.dtype), requires_grad=False))
        self._base_cache = None
        return self.model

    def coefficient_table(self) -> dict[str, dict[str, float] | float]:
        """The coefficients as nested dicts: source -> value (task-wise) or source -> {tensor: value} (layer-wise)."""
        lam = self.coefficients.detach().float().cpu()
        if self.granularity == "task":
            return {s: float(lam[i]) for i, s in enumerate(self.source_names)}
        return {s: {n: float(lam[i, j]) for j, n in enumerate(self.tensor_names)} for i, s in enumerate(self.source_names)}

    # -- Lightning ----------------------------------------------------------------------------------------------
    def on_train_start(self) -> None:
        self.model.eval()  # entropy of the deterministic predictions: no dropout

    def on_train_epoch_start(self) -> None:
        self.model.eval()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch["input_ids"], batch["attention_mask"])
        loss = mean_entropy(logits)
        self.log("entropy", loss, on_step=True, prog_bar=True, sync_dist=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.clamp:
            with torch.no_grad():
                self.coefficients.clamp_(0.0, 1.0)

    def on_train_batch_start(self, batch, batch_idx) -> None:
        self._step_start = time.perf_counter()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.coefficients.device.type == "cuda":
            torch.cuda.synchronize(self.coefficients.device)
        self.step_times.append(time.perf_counter() - self._step_start)
        # Every coefficient, every step, in one logger call (cheap even for K × L values).
        trainer = self.trainer
        if not trainer.loggers or trainer.global_step % max(1, trainer.log_every_n_steps) != 0:
            return
        lam = self.coefficients.detach().float().cpu()
        if self.granularity == "task":
            metrics = {f"lambda/{s}": float(lam[i]) for i, s in enumerate(self.source_names)}
        else:
            metrics = {f"lambda/{s}/mean": float(lam[i].mean()) for i, s in enumerate(self.source_names)}
            metrics.update(
                {f"lambda/{s}/{n}": float(lam[i, j]) for i, s in enumerate(self.source_names) for j, n in enumerate(self.tensor_names)}
            )
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam([self.coefficients], lr=self.lr)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Only the coefficients are state; the base and task vectors are rebuilt from their checkpoints on resume.
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k == "coefficients"}
