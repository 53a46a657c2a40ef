"""Shared test set-up: offline and quiet, and the one set of builders every test uses -- tiny XLM-R-architecture
checkpoint families in merginguriel's layout, MASSIVE release-format data writers, teacher-labelled scenarios where the
effect of merging is known in advance, and the AdaMerging / Fisher / RegMean worlds -- as plain functions (``from
conftest import make_family``) and as fixtures. Everything is built inside the tests: no network.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
sys.path.insert(0, str(Path(__file__).parent))
logging.getLogger("urielplus").setLevel(logging.WARNING)

from merginguriel.checkpoints import Layout  # noqa: E402
from merginguriel.data.config import DataConfig  # noqa: E402
from merginguriel.io import read_manifest  # noqa: E402
from merginguriel.locales import ID2LABEL, INTENTS, LABEL2ID, NUM_INTENTS  # noqa: E402
from merginguriel.models.export import export_hf  # noqa: E402


# --- tiny checkpoints ------------------------------------------------------------------------------------------------
WORDS = [f"w{i}" for i in range(200)]


def tiny_tokenizer():
    from transformers import XLMRobertaTokenizer

    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(f"\u2581{w}", -float(i + 1)) for i, w in enumerate(WORDS)]
    vocab += [("<mask>", 0.0)]
    return XLMRobertaTokenizer(vocab=vocab)


def tiny_config(hidden: int = 32, layers: int = 2, heads: int = 2, intermediate: int = 64, vocab_size: int | None = None):
    from transformers import XLMRobertaConfig

    cfg = XLMRobertaConfig(
        vocab_size=vocab_size or len(WORDS) + 5,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=72,
        num_labels=NUM_INTENTS,
        id2label=dict(ID2LABEL),
        label2id=dict(LABEL2ID),
    )
    return cfg


def make_base(root: Path, slug: str = "tiny", seed: int = 0, **config_kwargs) -> Path:
    from transformers import XLMRobertaForSequenceClassification

    torch.manual_seed(seed)
    model = XLMRobertaForSequenceClassification(tiny_config(**config_kwargs))
    layout = Layout(Path(root), slug)
    export_hf(model, tiny_tokenizer(), layout.base, kind="base", backbone=slug, seed=seed)
    return layout.base


def save_finetuned(layout: Layout, model, locale: str, seed: int = 0) -> Path:
    """Save an in-memory model as ``locale``'s fine-tune, with the manifest `merginguriel fit` writes."""
    from transformers import AutoTokenizer

    export_hf(
        model,
        AutoTokenizer.from_pretrained(layout.base),
        layout.finetuned(locale),
        kind="finetuned",
        locale=locale,
        base={"path": str(layout.base), "hash": read_manifest(layout.base)["hash"]},
        seed=seed,
        overwrite=True,
    )
    return layout.finetuned(locale)


def make_finetuned(root: Path, locale: str, slug: str = "tiny", seed: int = 1, scale: float = 0.02) -> Path:
    """A 'fine-tuned' model: the base plus a seeded Gaussian perturbation of every tensor."""
    from transformers import AutoModelForSequenceClassification

    layout = Layout(Path(root), slug)
    model = AutoModelForSequenceClassification.from_pretrained(layout.base)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return save_finetuned(layout, model, locale, seed)


def make_family(root: Path, locales: list[str], slug: str = "tiny", seed: int = 0, **config_kwargs) -> Layout:
    make_base(root, slug, seed=seed, **config_kwargs)
    for i, loc in enumerate(locales):
        make_finetuned(root, loc, slug, seed=seed + 100 + i)
    return Layout(Path(root), slug)


def write_release_data(folder: Path, locales: list[str], per_intent: tuple[int, int, int] = (4, 2, 2), seed: int = 0,
                       shift: dict[str, int] | None = None) -> Path:
    """Release-format MASSIVE files (`<folder>/1.1/data/<locale>.jsonl`) in tiny.py's vocabulary, learnable from words.

    Intent i's utterances contain the words w{3i}, w{3i+1}, w{3i+2} plus noise; ``shift[locale]`` rotates a locale's
    words so that locales differ (a shift of 0 is the "same language"). Rows are parallel across locales by ``id``.
    """
    import random

    from merginguriel.locales import INTENTS

    shift = shift or {}
    parts = [("train", per_intent[0]), ("dev", per_intent[1]), ("test", per_intent[2])]
    for loc in locales:
        rng = random.Random(seed)
        rows, rid = [], 0
        for partition, n in parts:
            for i, intent in enumerate(INTENTS):
                for _ in range(n):
                    words = [f"w{(3 * i + rng.randrange(3) + shift.get(loc, 0)) % 180}" for _ in range(3)]
                    words += [f"w{180 + rng.randrange(20)}" for _ in range(rng.randrange(1, 4))]
                    rng.shuffle(words)
                    rows.append({"id": str(rid), "locale": loc, "partition": partition, "scenario": intent.split("_")[0],
                                 "intent": intent, "utt": " ".join(words), "annot_utt": " ".join(words)})
                    rid += 1
        write_jsonl(Path(folder) / "1.1" / "data" / f"{loc}.jsonl", rows)
    return Path(folder)


def cache_hub_model(cache: Path, repo_id: str, folder: Path) -> Path:
    """Put ``folder``'s model files (weights, config, tokenizer: no manifest or card) into a Hugging Face hub cache
    exactly as ``snapshot_download`` leaves them, with the hub library's own naming and linking:
    ``models--<namespace>--<name>/blobs/<hash>``, ``snapshots/<commit>/<file>`` linked to the blobs, ``refs/main``
    naming the commit. Returns the snapshot folder."""
    import hashlib
    import shutil

    from huggingface_hub.file_download import _create_symlink, repo_folder_name

    from merginguriel.io import file_sha256

    storage = Path(cache) / repo_folder_name(repo_id=repo_id, repo_type="model")
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = storage / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (storage / "blobs").mkdir()
    for f in sorted(Path(folder).iterdir()):
        if f.is_file() and f.name not in ("manifest.json", "README.md"):
            blob = storage / "blobs" / file_sha256(f)
            shutil.copyfile(f, blob)
            _create_symlink(str(blob), str(snapshot / f.name))
    (storage / "refs").mkdir()
    (storage / "refs" / "main").write_text(commit)
    return snapshot


# --- MASSIVE release-format data -------------------------------------------------------------------------------
PARTITION_SIZES = {"train": 40, "dev": 12, "test": 15}


def release_rows(locale: str, seed: int = 0, sizes: dict[str, int] = PARTITION_SIZES) -> list[dict]:
    """Rows in the release schema: string intents, partitions train/dev/test, utterances of tiny-tokenizer words w0..w199."""
    rng = random.Random(f"{locale}-{seed}")
    rows = []
    for partition, n in sizes.items():
        for _ in range(n):
            length = rng.randint(1, 14)
            rows.append({
                "id": str(len(rows)),
                "locale": locale,
                "partition": partition,
                "scenario": "x",
                "intent": rng.choice(INTENTS),
                "utt": " ".join(f"w{rng.randrange(200)}" for _ in range(length)),
                "annot_utt": "",
            })
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def write_release(folder: Path, locales: list[str], subdir: str = "1.1/data", seed: int = 0) -> dict[str, list[dict]]:
    """Write ``<folder>/<subdir>/<locale>.jsonl`` for each locale; return the rows written."""
    written = {}
    for loc in locales:
        rows = release_rows(loc, seed)
        write_jsonl(folder / subdir / f"{loc}.jsonl", rows)
        written[loc] = rows
    return written


def write_tarball(src: Path, dest: Path) -> Path:
    """Pack ``src/1.1`` as the official tarball does (members ``1.1/data/<locale>.jsonl``)."""
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(src / "1.1", arcname="1.1")
    return dest


# --- teacher-labelled scenarios ----------------------------------------------------------------------------------------
NUM_CLASSES = 10
BAND = 20


def utterance(rng: random.Random, label: int, words: int = 4) -> str:
    return " ".join(f"w{label * BAND + rng.randrange(BAND)}" for _ in range(words))


def write_class_release(folder: Path, locales: list[str], per_split: dict[str, int] | None = None, seed: int = 0) -> Path:
    """MASSIVE release jsonl (``<folder>/1.1/data/<locale>.jsonl``) for ``locales``; returns ``folder``."""
    per_split = per_split or {"train": 200, "dev": 60, "test": 60}
    for li, loc in enumerate(locales):
        rng = random.Random(seed * 1000 + li)
        rows = []
        for partition, n in per_split.items():
            for _ in range(n):
                label = rng.randrange(NUM_CLASSES)
                rows.append({"id": str(len(rows)), "locale": loc, "partition": partition, "utt": utterance(rng, label),
                             "intent": INTENTS[label]})
        write_jsonl(Path(folder) / "1.1" / "data" / f"{loc}.jsonl", rows)
    return Path(folder)


def random_utterances(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(f"w{rng.randrange(200)}" for _ in range(rng.randint(3, 8))) for _ in range(n)]


def teacher_model(layout: Layout, utterances: list[str], seed: int = 0):
    """A model that is right by construction: the base with its output layer replaced so the logits are a random
    projection of the standardised head features over ``utterances`` (so ~50 of the 60 intents get predicted).
    Labelling data with its predictions makes it 100% accurate, and small weight perturbations cost accuracy."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(layout.base)
    model = AutoModelForSequenceClassification.from_pretrained(layout.base).eval()
    enc = tok(utterances, return_tensors="pt", padding=True)
    seen = {}
    hook = model.classifier.out_proj.register_forward_hook(lambda mod, inp, out: seen.__setitem__("x", inp[0]))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model(**enc)
        hook.remove()
        x = seen["x"]
        mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
        w = torch.randn(model.config.num_labels, x.shape[1], generator=gen) / sd * 5
        model.classifier.out_proj.weight.copy_(w)
        model.classifier.out_proj.bias.copy_(-(w @ mu))
    return model


def label_with(model, layout: Layout, utterances: list[str]) -> list[int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(layout.base)
    with torch.no_grad():
        return model(**tok(utterances, return_tensors="pt", padding=True)).logits.argmax(-1).tolist()


def write_labelled_release(folder: Path, locale: str, splits: dict[str, tuple[list[str], list[int]]]) -> None:
    """Release jsonl for one locale from given utterances and hub label ids per partition (train/dev/test)."""
    rows = []
    for partition, (utts, labels) in splits.items():
        for u, y in zip(utts, labels):
            rows.append({"id": str(len(rows)), "locale": locale, "partition": partition, "utt": u, "intent": INTENTS[y]})
    write_jsonl(Path(folder) / "1.1" / "data" / f"{locale}.jsonl", rows)


def build_scenario(root: Path, target: str, sources: list[str], kind: str, slug: str = "tiny") -> tuple[Layout, Path]:
    """A checkpoint family and release data where merging the sources clearly helps (``kind="helps"``: each source
    is the teacher plus independent noise, their average is close to the teacher) or clearly hurts (``"hurts"``: each
    source is the teacher with its feed-forward units permuted differently, exactly as accurate, but their average
    mixes unrelated units). Every locale's data is labelled by the teacher. Returns (layout, data folder)."""

    make_base(root, slug, seed=0)
    layout = Layout(Path(root), slug)
    data = Path(root) / "data"
    teacher = teacher_model(layout, random_utterances(300, seed=99))
    for li, loc in enumerate([target, *sources]):
        splits = {}
        for pi, (partition, n) in enumerate((("train", 40), ("dev", 150), ("test", 150))):
            utts = random_utterances(n, seed=1000 * li + pi)
            splits[partition] = (utts, label_with(teacher, layout, utts))
        write_labelled_release(data, loc, splits)
    for i, loc in enumerate(sources):
        model = noisy_copy(teacher, 0.001, seed=i) if kind == "helps" else permuted_copy(teacher, seed=i)
        save_finetuned(layout, model, loc, seed=i)
    return layout, data


def noisy_copy(model, scale: float, seed: int):
    """The model plus seeded Gaussian noise on every encoder/head parameter (a weak source whose errors are independent)."""
    import copy

    out = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in out.named_parameters():
            if "embeddings" in name or "LayerNorm" in name:
                continue
            p.add_(torch.randn(p.shape, generator=gen) * scale * p.detach().abs().mean())
    return out


def permuted_copy(model, seed: int):
    """The same function with every layer's feed-forward hidden units permuted: exactly as accurate as ``model``, but
    averaging differently permuted copies mixes unrelated units, so their merge is poor (merging clearly hurts)."""
    import copy

    out = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in out.roberta.encoder.layer:
            perm = torch.randperm(layer.intermediate.dense.out_features, generator=gen)
            layer.intermediate.dense.weight.copy_(layer.intermediate.dense.weight[perm])
            layer.intermediate.dense.bias.copy_(layer.intermediate.dense.bias[perm])
            layer.output.dense.weight.copy_(layer.output.dense.weight[:, perm])
    return out


# --- AdaMerging / Fisher / RegMean worlds ------------------------------------------------------------------------------
WORLD_TARGET = "sw-KE"
WORLD_SOURCES = ["de-DE", "fr-FR", "es-ES"]


@dataclass
class World:
    root: Path
    layout: object
    data: DataConfig

    def spec(self, output_name: str = "run", sources=None, weights=None, method: str = "adamerging", **kw):
        """A merge spec (the merge engine's MergeSpec) for ``sources`` into ``merged/<target>/<output_name>``."""
        from merginguriel.merging.spec import MergeSpec, Source

        sources = sources or WORLD_SOURCES
        weights = weights or [1.0 / len(sources)] * len(sources)
        kw.setdefault("target", WORLD_TARGET)
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
    locales = locales or [WORLD_TARGET, *WORLD_SOURCES]
    layout = make_family(tmp / "ckpt", locales)
    if scale is not None:  # larger task vectors so that merging visibly changes predictions

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
    from merginguriel.checkpoints import Layout

    make_base(tmp / "ckpt", "tiny", seed=0)
    layout = Layout(tmp / "ckpt", "tiny")
    teacher = teacher_model(layout, random_utterances(300, seed=99))
    with torch.no_grad():  # the same labels, less confident: a merge's entropy then still has somewhere to go
        teacher.classifier.out_proj.weight.mul_(sharpness)
        teacher.classifier.out_proj.bias.mul_(sharpness)
    for li, loc in enumerate([WORLD_TARGET, *WORLD_SOURCES]):
        splits = {}
        for pi, partition in enumerate(("train", "dev", "test")):
            utts = random_utterances(utterances, seed=1000 * li + pi)
            splits[partition] = (utts, label_with(teacher, layout, utts))
        write_labelled_release(tmp / "massive", loc, splits)
    models = {"de-DE": noisy_copy(teacher, 0.0005, seed=1), "fr-FR": noisy_copy(teacher, 0.001, seed=2), "es-ES": permuted_copy(teacher, seed=3)}
    for i, loc in enumerate(WORLD_SOURCES):
        save_finetuned(layout, models[loc], loc, seed=i)
    data = DataConfig(source="release", data_path=str(tmp / "massive"), root=str(tmp / "ckpt"), max_length=32)
    return World(tmp / "ckpt", layout, data)


# --- the command line as a user runs it ---------------------------------------------------------------------------------
def run_command(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``merginguriel <args>`` in a real subprocess (offline), its output captured."""
    exe = Path(sys.executable).with_name("merginguriel")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "merginguriel.cli.main"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([*cmd, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def assert_clear_error(proc, *needles: str) -> None:
    """A refused input: exit 2, the message (every needle in it) on stderr, no traceback."""
    detail = f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout[-2000:]}\nSTDERR:\n{proc.stderr[-3000:]}"
    assert proc.returncode == 2, detail
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, detail
    for needle in needles:
        assert needle in proc.stderr, f"{needle!r} not in the message\n{detail}"


def files_under(folder: Path) -> set[str]:
    """Every file and folder below ``folder`` (relative paths, hidden ones included)."""
    folder = Path(folder)
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


@contextlib.contextmanager
def small_disk(folder: Path, size: int, options: str = ""):
    """A tmpfs of ``size`` bytes mounted at ``folder`` (a full disk a write can really run into; ``options="ro"``: a
    read-only filesystem); skips the test where this machine does not allow mounting."""
    import subprocess

    folder.mkdir(parents=True, exist_ok=True)
    flags = ",".join(filter(None, [options, f"size={size}"]))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", flags, "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.decode().strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def page_bytes(*files: Path) -> int:
    """What ``files`` take on a tmpfs: each rounded up to whole pages."""
    page = os.sysconf("SC_PAGE_SIZE")
    return sum(-(-Path(f).stat().st_size // page) * page for f in files)


# --- fixtures --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_family_factory(tmp_path_factory):
    """Build a tiny checkpoint family: a shared base and one seeded 'fine-tune' per locale (make_family)."""

    def build(locales, root=None, slug="tiny", **config):
        return make_family(Path(root) if root else tmp_path_factory.mktemp("family"), list(locales), slug, **config)

    return build


@pytest.fixture(scope="session")
def scenario_factory(tmp_path_factory):
    """Build a teacher-labelled scenario where merging clearly helps or hurts (build_scenario)."""

    def build(target, sources, kind="helps", root=None):
        return build_scenario(Path(root) if root else tmp_path_factory.mktemp("scenario"), target, list(sources), kind)

    return build

