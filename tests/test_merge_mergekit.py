"""`merginguriel merge --mergekit mergekit.yml`: a mergekit config gives the tensors mergekit's own rules give
(tests/merge_refs.py re-implements them from mergekit 0.1.5's definitions), for every method both tools have; what
cannot be translated is refused with the key named, exit 2, nothing written. benchmarks/compare_mergekit.py compares
with the real mergekit."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

import merge_refs as ref
from merginguriel.cli.main import main, run
from merginguriel.errors import InputError
from merginguriel.merging.dare_mask import keep_mask

LOCALES = ["de-DE", "fr-FR", "sw-KE"]


@pytest.fixture(scope="module")
def family(tiny_family_factory):
    layout = tiny_family_factory(LOCALES)
    base = ref.load(layout.base)
    models = {loc: ref.load(layout.finetuned(loc)) for loc in LOCALES}
    return layout, base, models


def _config(layout, method: str, models: list[tuple[str, dict]], base: bool = True, **top) -> dict:
    cfg = {"merge_method": method, "models": [{"model": str(layout.finetuned(loc)), "parameters": p} for loc, p in models]}
    if base:
        cfg["base_model"] = str(layout.base)
    cfg.update(top)
    return cfg


def _merge(layout, tmp_path, cfg: dict, *extra: str, capsys=None) -> dict:
    path = tmp_path / f"mk-{len(list(tmp_path.iterdir()))}.yml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / f"out-{path.stem}"
    args = ["--mergekit", str(path), "--output", str(out), "--evaluate.splits", "[]", "--progress", "false", *extra]
    if cfg["merge_method"] in ("linear", "slerp"):  # the shared base is not in the config: from --root/--backbone
        args += ["--root", str(layout.root), "--backbone", layout.backbone]
    assert run("merge", args) == 0
    return ref.load(out)


def _close(got: dict, want: dict, atol=3e-6, rtol=1e-5) -> None:
    assert set(got) == set(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name].float(), atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("normalize", [True, False])
def test_linear(family, tmp_path, normalize):
    layout, base, models = family
    cfg = _config(layout, "linear", [("de-DE", {"weight": 2.0}), ("fr-FR", {"weight": 1.0})], base=False,
                  parameters={"normalize": normalize})
    got = _merge(layout, tmp_path, cfg)
    _close(got, ref.mergekit_linear([models["de-DE"], models["fr-FR"]], [2.0, 1.0], normalize))


def test_task_arithmetic_lambda_scales_the_weighted_sum(family, tmp_path):
    layout, base, models = family
    # the base listed among the models, as mergekit configs often do: it takes no part
    cfg = _config(layout, "task_arithmetic", [("de-DE", {"weight": 0.5}), ("fr-FR", {"weight": 0.8})],
                  parameters={"lambda": 0.7})
    cfg["models"].append({"model": str(layout.base)})
    # --root/--backbone naming base_model's own shared base agree with it (not a conflict)
    got = _merge(layout, tmp_path, cfg, "--root", str(layout.root), "--backbone", layout.backbone)
    _close(got, ref.mergekit_gta(base, [models["de-DE"], models["fr-FR"]], [0.5, 0.8], lam=0.7))
    manifest = json.loads(next(tmp_path.glob("out-*/manifest.json")).read_text())
    assert manifest["params"]["lam"] == pytest.approx(0.7 * 1.3)  # mergekit's λ over weights summing to 1.3


@pytest.mark.parametrize("normalize", [True, False])
def test_ties_per_tensor_floor_and_sign_consensus(family, tmp_path, normalize):
    layout, base, models = family
    srcs = [models[loc] for loc in LOCALES]
    weights = [1.0, 0.5, 0.7]
    cfg = _config(layout, "ties", [(loc, {"weight": w, "density": 0.35}) for loc, w in zip(LOCALES, weights)],
                  parameters={"normalize": normalize, "lambda": 0.9})
    got = _merge(layout, tmp_path, cfg)
    want = ref.mergekit_gta(base, srcs, weights, sparsify="magnitude", density=0.35, consensus="sum", normalize=normalize,
                            lam=0.9)
    _close(got, want)
    if normalize:  # the reference written earlier for tests/test_merge_methods.py agrees too
        _close(got, {n: base[n] + 0.9 * (v - base[n]) for n, v in ref.mergekit_ties(base, srcs, weights, 0.35).items()})


def test_dare_ties_without_dropping_is_exact(family, tmp_path):
    layout, base, models = family
    srcs = [models[loc] for loc in LOCALES]
    cfg = _config(layout, "dare_ties", [(loc, {"weight": w, "density": 1.0}) for loc, w in zip(LOCALES, [0.2, 0.5, 0.3])])
    _close(_merge(layout, tmp_path, cfg), ref.mergekit_gta(base, srcs, [0.2, 0.5, 0.3], consensus="sum"))


@pytest.mark.parametrize("method", ["dare_ties", "dare_linear"])
def test_dare_with_the_same_mask_gives_mergekits_tensors(family, tmp_path, method, capsys):
    """DARE draws random masks, so mergekit's own draw cannot be reproduced; with merginguriel's mask (read from the
    seed and the source hashes its manifest records) mergekit's formula gives merginguriel's tensors."""
    layout, base, models = family
    srcs, weights = [models[loc] for loc in LOCALES], [0.6, 0.9, 0.5]
    cfg = _config(layout, method, [(loc, {"weight": w, "density": 0.6}) for loc, w in zip(LOCALES, weights)],
                  parameters={"rescale": False, "lambda": 1.1})
    got = _merge(layout, tmp_path, cfg)
    assert "mask" in capsys.readouterr().out  # the note that masks differ from mergekit's
    manifest = json.loads(next(tmp_path.glob("out-*/manifest.json")).read_text())
    assert manifest["method"] == {"dare_ties": "dare_ties", "dare_linear": "dare_task_arithmetic"}[method]
    masks = [{n: keep_mask(manifest["seed"], s["hash"], n, tuple(t.shape), (0, t.shape[0] if t.dim() else 1), 0.4)
              for n, t in base.items()} for s in manifest["sources"]]
    kept = sum(float(m[n].float().sum()) for m in masks for n in m) / sum(m[n].numel() for m in masks for n in m)
    assert kept == pytest.approx(0.6, abs=0.02)
    want = ref.mergekit_gta(base, srcs, weights, sparsify="random", density=0.6, masks=masks, lam=1.1,
                            consensus="sum" if method == "dare_ties" else None)
    _close(got, want)


@pytest.mark.parametrize("density,gamma", [(0.7, 0.1), (0.95, 0.1)])
def test_breadcrumbs_magnitude_outliers(family, tmp_path, density, gamma):
    """mergekit's magnitude_outliers rounding (int(density·n) kept, fewer outliers dropped when both do not fit)."""
    layout, base, models = family
    srcs, weights = [models["de-DE"], models["sw-KE"]], [0.4, 1.2]
    cfg = _config(layout, "breadcrumbs", [("de-DE", {"weight": 0.4}), ("sw-KE", {"weight": 1.2})],
                  parameters={"density": density, "gamma": gamma, "lambda": 0.8})
    want = ref.mergekit_gta(base, srcs, weights, sparsify="outliers", density=density, gamma=gamma, lam=0.8)
    _close(_merge(layout, tmp_path, cfg), want)


@pytest.mark.parametrize("normalize", [True, False])
def test_breadcrumbs_ties_outliers_and_sign_consensus(family, tmp_path, normalize):
    """mergekit's breadcrumbs_ties (magnitude_outliers + the sum consensus) as the breadcrumbs_ties preset: the
    breadcrumbs sparsification with the TIES election, a combination the composed family gives for free."""
    layout, base, models = family
    srcs = [models[loc] for loc in LOCALES]
    weights = [1.0, 0.5, 0.7]
    cfg = _config(layout, "breadcrumbs_ties", [(loc, {"weight": w}) for loc, w in zip(LOCALES, weights)],
                  parameters={"density": 0.7, "gamma": 0.1, "normalize": normalize, "lambda": 0.9})
    got = _merge(layout, tmp_path, cfg)
    want = ref.mergekit_gta(base, srcs, weights, sparsify="outliers", density=0.7, gamma=0.1, consensus="sum",
                            normalize=normalize, lam=0.9)
    _close(got, want)
    assert json.loads(next(tmp_path.glob("out-*/manifest.json")).read_text())["method"] == "breadcrumbs_ties"


def test_slerp_interpolates_from_the_base_model_at_t(family, tmp_path):
    """mergekit's slerp: t = 0 is base_model (here fr-FR), whatever order the models are listed in."""
    layout, base, models = family
    cfg = {"merge_method": "slerp", "base_model": str(layout.finetuned("fr-FR")), "parameters": {"t": 0.3},
           "models": [{"model": str(layout.finetuned("sw-KE"))}, {"model": str(layout.finetuned("fr-FR"))}]}
    got = _merge(layout, tmp_path, cfg)
    want = {n: ref.slerp_pair(models["fr-FR"][n], models["sw-KE"][n], 0.3) for n in base}
    _close(got, want)


def test_recipe_of_an_import_reproduces_it(family, tmp_path, capsys):
    layout, base, models = family
    cfg = _config(layout, "ties", [("de-DE", {"weight": 1.0}), ("fr-FR", {"weight": 1.0})],
                  parameters={"density": 0.5}, dtype="float16")
    path = tmp_path / "mk.yml"
    path.write_text(yaml.safe_dump(cfg))
    assert run("merge", ["--mergekit", str(path), "--print_recipe", "--evaluate.splits", "[]"]) == 0
    out = capsys.readouterr()
    recipe = yaml.safe_load(out.out)
    assert "float16 rounding" in out.err  # the note goes to stderr: stdout is the recipe
    assert recipe["merge"] == {"method": "ties", "params": {"density": 0.5, "scope": "tensor", "rounding": "floor",
                                                           "merge": "dis-mean", "lam": 1.0}, "dtype": "float16"}
    assert recipe["selection"] == {"sources": [str(layout.finetuned("de-DE")), str(layout.finetuned("fr-FR"))],
                                   "weights": [1.0, 1.0]}
    assert recipe["backbone"] == str(layout.base.resolve()) and recipe["root"] == str(layout.root.resolve())


BAD = [
    ({"slices": [{"sources": []}]}, "slices"),
    ({"parameters": {"density": [0.2, 0.8]}}, "single number"),
    ({"parameters": {"density": [{"filter": "attn", "value": 0.5}]}}, "single number"),
    ({"merge_method": "della"}, "della"),
    ({"parameters": {"epsilon": 0.1}}, "epsilon"),
    ({"parameters": {"rescale": True, "density": 0.5}}, "rescale"),
    ({"tokenizer_source": "union"}, "tokenizer_source"),
    ({"dtype": "float64"}, "float64"),
    ({"base_model": None}, "needs base_model"),
]


@pytest.mark.parametrize("change,match", BAD, ids=[m for _, m in BAD])
def test_untranslatable_configs_are_refused(family, tmp_path, change, match):
    layout, _, _ = family
    cfg = _config(layout, "ties", [("de-DE", {"weight": 1.0}), ("fr-FR", {"weight": 1.0})])
    cfg.update(change)
    path = tmp_path / "mk.yml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(InputError, match=match):
        run("merge", ["--mergekit", str(path), "--output", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_refusals_name_the_fix(family, tmp_path, capsys):
    layout, _, _ = family
    path = tmp_path / "mk.yml"
    per_model = _config(layout, "ties", [("de-DE", {"weight": 1.0, "density": 0.2}), ("fr-FR", {"weight": 1.0, "density": 0.5})])
    path.write_text(yaml.safe_dump(per_model))
    with pytest.raises(InputError, match="different density values"):
        run("merge", ["--mergekit", str(path)])
    path.write_text(yaml.safe_dump(_config(layout, "linear", [("de-DE", {"weight": 1.0})])))
    with pytest.raises(InputError, match="set by the mergekit config .* and on the command line"):
        run("merge", ["--mergekit", str(path), "--selection.sources", "de-DE", "fr-FR"])
    # from the command line: exit 2, the message, no traceback
    path.write_text(yaml.safe_dump({**per_model, "slices": [{"sources": []}]}))
    assert main(["merge", "--mergekit", str(path)]) == 2
    err = capsys.readouterr().err
    assert "slices" in err and "Traceback" not in err


# --- a base the user names, and the import kept with the output -------------------------------------------------------
def test_a_named_base_model_takes_the_task_vectors_and_the_import_is_kept(family, tmp_path, capsys):
    """base_model a folder that is no shared base (here sw-KE's fine-tune): the task vectors are taken against it, as
    mergekit takes them; its hash is the manifest's base; the YAML is copied into the output and recorded, with the
    ignored int8_mask named."""
    from merginguriel.io import checkpoint_ref

    layout, _, models = family
    cfg = _config(layout, "ties", [("de-DE", {"weight": 0.7}), ("fr-FR", {"weight": 0.3})],
                  parameters={"density": 0.5, "int8_mask": True})
    cfg["base_model"] = str(layout.finetuned("sw-KE"))
    path = tmp_path / "named.yml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    assert run("merge", ["--mergekit", str(path), "--output", str(out), "--evaluate.splits", "[]", "--progress", "false",
                         "--root", str(layout.root), "--backbone", layout.backbone]) == 0
    printed = capsys.readouterr().out
    assert "ignored int8_mask" in printed and "merge.base" in printed
    swke = models["sw-KE"]
    want = ref.mergekit_gta(swke, [models["de-DE"], models["fr-FR"]], [0.7, 0.3], sparsify="magnitude", density=0.5,
                            consensus="sum", normalize=True)
    _close(ref.load(out), want)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["base"]["hash"] == checkpoint_ref(layout.finetuned("sw-KE"))["hash"]
    assert manifest["job"]["config"]["merge"]["base"] == str(layout.finetuned("sw-KE"))
    kept = out / "mergekit_config.yml"
    assert kept.read_text() == path.read_text()
    record = manifest["mergekit"]
    assert record["file"] == "mergekit_config.yml" and record["from"] == str(path.resolve())
    import hashlib

    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["ignored"] == ["int8_mask"] and any("int8_mask" in n for n in record["notes"])


def test_merge_base_on_the_command_line(family, tmp_path, capsys):
    """--merge.base: task arithmetic against the base named, through the real command line; a base of another shape,
    or a name that is neither a folder nor a hub id, is refused naming it, and nothing is written."""
    import subprocess
    import sys

    from conftest import make_base
    from merginguriel.cli.main import main

    layout, _, models = family
    cli = [sys.executable, "-m", "merginguriel.cli.main", "merge", "--root", str(layout.root), "--backbone",
           layout.backbone, "--evaluate.splits", "[]", "--progress", "false", "--selection.sources", "de-DE", "fr-FR",
           "--merge.method", "task_arithmetic", "--merge.params.lam", "0.6"]
    out = tmp_path / "ok"
    proc = subprocess.run([*cli, "--merge.base", str(layout.finetuned("sw-KE")), "--output", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    want = ref.task_arithmetic(models["sw-KE"], [models["de-DE"], models["fr-FR"]], [0.5, 0.5], 0.6)
    _close(ref.load(out), want)
    other = make_base(tmp_path / "other", "tiny", seed=0, hidden=48)
    swapped = tmp_path / "swapped"  # the sw-KE fine-tune with two labels swapped
    shutil.copytree(layout.finetuned("sw-KE"), swapped)
    config = json.loads((swapped / "config.json").read_text())
    config["id2label"]["0"], config["id2label"]["1"] = config["id2label"]["1"], config["id2label"]["0"]
    (swapped / "config.json").write_text(json.dumps(config))
    for base, needle in ((other, "the base [48]"), (swapped, "label order differs"), (tmp_path / "nowhere", "merge.base '")):
        bad = tmp_path / "bad"
        assert main([*cli[3:], "--merge.base", str(base), "--output", str(bad)]) == 2
        assert needle in capsys.readouterr().err
        assert not bad.exists()


# --- export: --save_mergekit --------------------------------------------------------------------------------------------
EXPORTS = [  # (merge.method, merge.params, weights)
    pytest.param("linear", {"normalise": False}, [0.5, 0.3, 0.2], id="linear"),
    pytest.param("average", {}, None, id="average"),
    pytest.param("task_arithmetic", {"lam": 0.7}, [2.0, 1.0, 1.0], id="task_arithmetic"),
    pytest.param("task_arithmetic", {"lam": 0.3, "weighted": False}, None, id="task_arithmetic-unweighted"),
    pytest.param("ties", {"density": 0.4, "scope": "tensor", "lam": 0.9}, [1.0, 0.5, 0.7], id="ties"),
    pytest.param("ties", {"density": 0.3, "scope": "tensor", "merge": "dis-sum", "lam": 0.4}, [1.0, 0.5, 0.7],
                 id="ties-dis-sum"),
    pytest.param("breadcrumbs", {"density": 0.8, "gamma": 0.05, "rounding": "floor"}, [0.4, 1.2, 0.6], id="breadcrumbs"),
    pytest.param("breadcrumbs_ties", {"density": 0.7, "gamma": 0.1, "rounding": "floor"}, [0.4, 1.2, 0.6],
                 id="breadcrumbs_ties"),
    pytest.param("task_vectors", {"consensus": "ties", "combine": "sum", "lam": 0.5}, [0.2, 0.5, 0.3], id="task_vectors"),
    pytest.param("slerp", {"t": 0.3}, None, id="slerp"),
]


@pytest.mark.parametrize("method, params, weights", EXPORTS)
def test_save_mergekit_round_trips(family, tmp_path, method, params, weights, capsys):
    """The exported YAML, merged again through the mergekit import (whose tensors tests above hold to mergekit's rules,
    and benchmarks/compare_mergekit.py to the real mergekit), gives the merge it was written from."""
    layout, _, _ = family
    sources = LOCALES[:2] if method == "slerp" else LOCALES
    args = ["--root", str(layout.root), "--backbone", layout.backbone, "--evaluate.splits", "[]", "--progress", "false",
            "--selection.sources", *sources, "--merge.method", method, *(["--selection.weights", *map(str, weights)] if weights else [])]
    for key, value in params.items():
        args += [f"--merge.params.{key}", str(value)]
    exported = tmp_path / "exported.yml"
    assert run("merge", [*args, "--output", str(tmp_path / "ours"), "--save_mergekit", str(exported)]) == 0
    assert f"mergekit config: {exported}" in capsys.readouterr().out
    config = yaml.safe_load(exported.read_text())
    assert config["merge_method"] == {"average": "linear", "task_vectors": "ties", "slerp": "slerp"}.get(method, method)
    assert run("merge", ["--mergekit", str(exported), "--output", str(tmp_path / "back"), "--evaluate.splits", "[]",
                         "--progress", "false", "--root", str(layout.root), "--backbone", layout.backbone]) == 0
    _close(ref.load(tmp_path / "back"), ref.load(tmp_path / "ours"), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("method, params, needle", [
    ("fisher", {}, "mergekit has no 'fisher' merge; the methods both tools have: average, breadcrumbs"),
    ("adamerging", {}, "mergekit has no 'adamerging' merge"),
    ("ties", {"density": 0.4}, "scope global trims over the whole model"),
    ("breadcrumbs", {}, "keeps ⌈density·n⌉ entries where mergekit keeps int(density·n); set rounding: floor"),
    ("task_arithmetic", {"lam": "[0.3, 0.5]"}, "lists 2 settings to choose from on validation, and mergekit takes one"),
])
def test_save_mergekit_refuses_what_mergekit_lacks_before_writing(family, tmp_path, method, params, needle, capsys):
    from merginguriel.cli.main import main

    layout, _, _ = family
    args = ["merge", "--root", str(layout.root), "--backbone", layout.backbone, "--target", "sw-KE", "--evaluate.splits",
            "[]", "--selection.sources", "de-DE", "fr-FR", "--merge.method", method, "--output", str(tmp_path / "out"),
            "--save_mergekit", str(tmp_path / "mk.yml")]
    for key, value in params.items():
        args += [f"--merge.params.{key}", str(value)]
    assert main(args) == 2
    assert needle in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
