"""Shared set-up of the AdaMerging / Fisher / RegMean tests: a tiny model family, release-format data, merge specs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from data_fixtures import release_rows, write_jsonl
from merginguriel.data.config import DataConfig
from tiny import make_family

TARGET = "sw-KE"
SOURCES = ["de-DE", "fr-FR", "es-ES"]


@dataclass
class World:
    root: Path
    layout: object
    data: DataConfig

    def spec(self, output_name: str = "run", sources=None, weights=None, method: str = "adamerging", **kw):
        """A merge spec (the merge engine's MergeSpec) for ``sources`` into ``merged/<target>/<output_name>``."""
        from merginguriel.merging.spec import MergeSpec, Source

        sources = sources or SOURCES
        weights = weights or [1.0 / len(sources)] * len(sources)
        kw.setdefault("target", TARGET)
        return MergeSpec(
            base=self.layout.base,
            sources=[Source(path=self.layout.finetuned(s), locale=s, weight=w) for s, w in zip(sources, weights)],
            method=method,
            params=kw.pop("params", {}),
            output=self.layout.merged(kw["target"] or "none", output_name),
            **{"progress": False, "device": "cpu", **kw},
        )


def make_world(tmp: Path, sizes: dict | None = None, locales=None, scale: float | None = None) -> World:
    """A tiny base + fine-tuned family (target and sources) and release-format data for every locale."""
    locales = locales or [TARGET, *SOURCES]
    layout = make_family(tmp / "ckpt", locales)
    if scale is not None:  # larger task vectors so that merging visibly changes predictions
        from tiny import make_finetuned

        for i, loc in enumerate(locales):
            import shutil

            shutil.rmtree(layout.finetuned(loc))
            make_finetuned(tmp / "ckpt", loc, seed=100 + i, scale=scale)
    for loc in locales:
        rows = release_rows(loc, **({"sizes": sizes} if sizes else {}))
        write_jsonl(tmp / "massive" / "1.1" / "data" / f"{loc}.jsonl", rows)
    data = DataConfig(source="release", data_path=str(tmp / "massive"), root=str(tmp / "ckpt"), max_length=32)
    return World(tmp / "ckpt", layout, data)


def load_state(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def task_arithmetic_reference(base: Path, sources: list[Path], coefficients) -> dict[str, torch.Tensor]:
    """θ_b + Σ_i λ_i (θ_i − θ_b) computed naively from the saved tensors (λ_i a float or {tensor name: float})."""
    b = load_state(base)
    srcs = [load_state(s) for s in sources]
    out = {}
    for name, t in b.items():
        acc = t.double().clone()
        for lam, s in zip(coefficients, srcs):
            c = lam[name] if isinstance(lam, dict) else lam
            acc += c * (s[name].double() - t.double())
        out[name] = acc.float()
    return out


def one_thread():
    """Run a test with one intra-op thread (tiny models on a shared 2-core machine: OpenMP spinning costs 10-20x)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def make_teacher_world(tmp: Path, utterances: int = 96, sharpness: float = 0.1) -> World:
    """A tiny world where AdaMerging has something to learn: every locale's data is labelled by a teacher model
    (experiment_fixtures.teacher_model, its logits scaled by ``sharpness``: about 30 intents predicted, not one-hot), and
    the sources differ: de-DE is the teacher plus a little noise, fr-FR plus twice as much (the teacher is fragile:
    0.1% noise halves its accuracy), es-ES the teacher with its feed-forward units permuted (as accurate alone, but
    merging it mixes unrelated units)."""
    from experiment_fixtures import label_with, noisy_copy, permuted_copy, random_utterances, teacher_model, write_labelled_release
    from merginguriel.checkpoints import Layout
    from tiny import make_base, save_finetuned

    make_base(tmp / "ckpt", "tiny", seed=0)
    layout = Layout(tmp / "ckpt", "tiny")
    teacher = teacher_model(layout, random_utterances(300, seed=99))
    with torch.no_grad():  # the same labels, less confident: a merge's entropy then still has somewhere to go
        teacher.classifier.out_proj.weight.mul_(sharpness)
        teacher.classifier.out_proj.bias.mul_(sharpness)
    for li, loc in enumerate([TARGET, *SOURCES]):
        splits = {}
        for pi, partition in enumerate(("train", "dev", "test")):
            utts = random_utterances(utterances, seed=1000 * li + pi)
            splits[partition] = (utts, label_with(teacher, layout, utts))
        write_labelled_release(tmp / "massive", loc, splits)
    models = {"de-DE": noisy_copy(teacher, 0.0005, seed=1), "fr-FR": noisy_copy(teacher, 0.001, seed=2), "es-ES": permuted_copy(teacher, seed=3)}
    for i, loc in enumerate(SOURCES):
        save_finetuned(layout, models[loc], loc, seed=i)
    data = DataConfig(source="release", data_path=str(tmp / "massive"), root=str(tmp / "ckpt"), max_length=32)
    return World(tmp / "ckpt", layout, data)
