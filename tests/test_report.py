"""The report: paired statistics against scipy, the verdict's choice on validation, the report over merged models'
manifests from the command line, and when the synergy predictor is (not) shown."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from merginguriel.evaluation.paired import bootstrap_interval, compare, mcnemar_exact
from merginguriel.report.rows import flatten
from merginguriel.report.verdict import verdicts


def test_mcnemar_and_bootstrap_against_scipy():
    import scipy.stats as stats
    rng = np.random.default_rng(3)
    for n, p_a, p_b in ((300, 0.55, 0.50), (120, 0.4, 0.6), (2000, 0.71, 0.70)):
        a = rng.random(n) < p_a
        b = np.where(rng.random(n) < 0.7, a, rng.random(n) < p_b)  # correlated, as two models on the same rows are
        p, a_only, b_only = mcnemar_exact(a, b)
        assert (a_only, b_only) == (int((a & ~b).sum()), int((~a & b).sum()))
        want = stats.binomtest(min(a_only, b_only), a_only + b_only, 0.5).pvalue
        assert p == pytest.approx(want, rel=1e-9)
        lo, hi = bootstrap_interval(a, b)
        ref = stats.bootstrap((a.astype(float), b.astype(float)), lambda x, y: np.mean(x - y), paired=True, vectorized=False,
                              n_resamples=4000, method="percentile", random_state=1).confidence_interval
        assert lo == pytest.approx(ref.low, abs=0.012) and hi == pytest.approx(ref.high, abs=0.012)
        assert lo < a.mean() - b.mean() < hi
    same = np.ones(50, dtype=bool)
    assert mcnemar_exact(same, same) == (1.0, 0, 0)
    result = compare(same, ~same)
    assert result.delta == 1.0 and result.p_value < 1e-10 and result.ci_low == result.ci_high == 1.0


def _row(target, method, val, test, gain_ci, sim="real", k=3, ens_val=0.0, best_val=0.5, weights_hash=None, tried=None,
         self_test=None):
    """A report row; ``tried`` = (chosen values, [candidate hashes]) for a job with a parameter list."""
    rec = {
        "validation": {"accuracy": val, "n": 100, "best_source": "fr-FR", "best_source_accuracy": best_val, "gain": val - best_val,
                       "gain_ci": [val - best_val - 0.05, val - best_val + 0.05], "gain_p": 0.5, "source_mean": 0.4,
                       "ensembles": {"soft_vote": ens_val}},
        "test": {"accuracy": test, "n": 100, "best_source": "fr-FR", "best_source_accuracy": 0.5, "gain": test - 0.5,
                 "gain_ci": list(gain_ci), "gain_p": 0.01 if gain_ci[0] > 0 else 0.4, "source_mean": 0.4,
                 "oracle_source": "de-DE", "ensembles": {"soft_vote": 0.66}},
    }
    if self_test is not None:
        rec["test"]["self_accuracy"] = self_test
    hashes = tried[1] if tried else [weights_hash or f"{target}-{method}"]
    meta = {"target": target, "method": method, "similarity": sim, "num_sources": k, "include_target": False,
            "weighting": "scores", "params": json.dumps({"lam": [0.3, 1.0]} if tried else {}),
            "chosen": json.dumps(tried[0]) if tried else "", "candidates": len(hashes),
            "hash": weights_hash or hashes[0], "candidate_hashes": " ".join(hashes), "sources": ["fr-FR", "de-DE", "it-IT"],
            "weights": [0.4, 0.3, 0.3], "run": method, "key": method, "manifest": None}
    return flatten(meta, rec)


def test_verdict_chooses_on_validation_and_needs_a_confident_gain():
    table = pd.DataFrame([
        # sw-KE: ties is best on validation; average is better on TEST but must not be picked (that would be choosing on test)
        _row("sw-KE", "ties", 0.60, 0.55, (0.01, 0.09)),
        _row("sw-KE", "average", 0.58, 0.70, (0.12, 0.28)),
        # th-TH: the validation-best merge's test gain interval straddles zero: no merge; an ensemble did better on validation
        _row("th-TH", "similarity", 0.62, 0.52, (-0.02, 0.06), ens_val=0.7),
        _row("th-TH", "ties", 0.55, 0.60, (0.03, 0.17)),
        # vi-VN: no merge either, and its ensemble is worse than the best source on validation (better on test: unseen)
        _row("vi-VN", "ties", 0.60, 0.52, (-0.02, 0.06), ens_val=0.45),
    ])
    found = {v.target: v for v in verdicts(table)}
    assert found["sw-KE"].merge and found["sw-KE"].row["method"] == "ties"
    assert found["sw-KE"].line == ("sw-KE: merge (ties, REAL, K=3; best of 2 merges (2 distinct models), chosen on "
                                   "validation): 0.550 vs best source fr-FR 0.500, gain +5.0 pts [95% CI +1.0, +9.0], p = 0.01")
    # th-TH's chosen merge scores higher than its best source (0.52 vs 0.50), but the interval reaches zero
    assert not found["th-TH"].merge and found["th-TH"].row["method"] == "similarity"
    assert found["th-TH"].line.startswith(
        "th-TH: not significantly better than fr-FR (best source): the merge (similarity, REAL, K=3; best of 2 merges (2 "
        "distinct models), chosen on validation) scores 0.520 vs 0.500, gain +2.0 pts [95% CI -2.0, +6.0], p = 0.4; use "
        "fr-FR (0.500 test), or the soft vote ensemble of the same sources (0.660 test, 3x the inference cost)")
    assert not found["vi-VN"].merge and "ensemble" not in found["vi-VN"].line
    assert "the only merge tried" in found["vi-VN"].line
    # lower than the best source: no merge beats it
    (worse,) = verdicts(pd.DataFrame([_row("fi-FI", "ties", 0.60, 0.45, (-0.09, -0.01))]))
    assert worse.line.startswith("fi-FI: no merge beats the best source: use fr-FR (0.500 test); the merge (ties, REAL, K=3; "
                                 "the only merge tried) scores 0.450, gain -5.0 pts")


def test_the_verdict_counts_merges_and_distinct_models_and_shows_the_targets_own_model(tmp_path):
    """Two merges with the same weights' hash are one model (shown and counted once); every value of a parameter list
    is a merge tried; the target's own model stands beside the verdict."""
    from merginguriel.report.build import build_report

    table = pd.DataFrame([
        _row("sw-KE", "task_arithmetic", 0.61, 0.56, (0.01, 0.11), self_test=0.83,
             tried=({"lam": 0.3}, ["h-lam0.3", "h-lam1.0", "h-sim"])),  # lam 1.0 = similarity's weights
        _row("sw-KE", "similarity", 0.60, 0.55, (0.01, 0.09), weights_hash="h-sim"),
        _row("sw-KE", "average", 0.59, 0.55, (0.01, 0.09), weights_hash="h-sim"),
        _row("sw-KE", "ties", 0.58, 0.50, (-0.05, 0.05), weights_hash="h-ties"),
    ])
    (found,) = verdicts(table)
    assert found.line == ("sw-KE: merge (task_arithmetic, REAL, K=3 {\"lam\": 0.3} (chosen on validation from 3); best of "
                          "6 merges (4 distinct models), chosen on validation): 0.560 vs best source fr-FR 0.500, gain "
                          "+6.0 pts [95% CI +1.0, +11.0], p = 0.01; the target's own model scores 0.830 test")
    _, _ = build_report(table, str(tmp_path / "rep"))
    summary = (tmp_path / "rep" / "summary.md").read_text()
    rows = [line for line in summary.splitlines() if line.startswith("| task_arithmetic") or line.startswith("| similarity")
            or line.startswith("| average") or line.startswith("| ties")]
    assert [r.split(" | ")[0] for r in rows] == [
        "| task_arithmetic, REAL, K=3 {\"lam\": 0.3} (chosen on validation from 3)",
        "| similarity, REAL, K=3 (= average, REAL, K=3: the same weights)", "| ties, REAL, K=3"]
    assert "4 distinct model(s)" in summary and "6 merge(s) tried" in summary and "about 0.2 would look" in summary


def test_the_verdict_must_beat_the_best_single_model_even_when_it_was_not_merged():
    """A merge that beats its own sources but not a better model left out of the selection is not recommended: the
    user would deploy that model instead."""
    good = _row("sw-KE", "ties", 0.60, 0.55, (0.01, 0.09))
    assert verdicts(pd.DataFrame([good]))[0].merge
    for split, acc, ci in (("val", 0.62, (-0.06, 0.02)), ("test", 0.58, (-0.07, 0.01))):
        good.update({f"{split}_best_overall": "pt-PT", f"{split}_best_overall_accuracy": acc, f"{split}_overall_delta": -0.03,
                     f"{split}_overall_ci_low": ci[0], f"{split}_overall_ci_high": ci[1], f"{split}_overall_p": 0.3})
    (found,) = verdicts(pd.DataFrame([good]))
    assert not found.merge
    assert found.line.startswith("sw-KE: no merge beats the best single model (not merged): use pt-PT (0.580 test); "
                                 "the merge (ties, REAL, K=3; the only merge tried) scores 0.550, margin over the best "
                                 "single model -3.0 pts")
    good["test_best_overall"] = good["val_best_overall"] = "fr-FR"  # the best model is a merged source: gain decides
    assert verdicts(pd.DataFrame([good]))[0].merge


def test_report_over_merged_models_from_the_command_line(tmp_path, capsys):
    """Merged without evaluation, then `report models`: each model is judged now (validation and test, every
    baseline on the same rows), the judgement lands in its manifest, and the verdict comes last."""
    from conftest import build_scenario
    from merginguriel.cli.main import main
    from merginguriel.evaluation.evaluate import evaluate_checkpoint
    from merginguriel.data.config import DataConfig
    from merginguriel.jobs import MergeJob, run_job

    layout, data = build_scenario(tmp_path, "sw-KE", ["th-TH", "vi-VN", "fi-FI"], "helps")
    job = MergeJob(target="sw-KE", backbone="tiny", root=str(tmp_path), data={"source": "release", "data_path": str(data)},
                   selection={"similarity": "uriel", "num_sources": 3}, merge={"method": "ties"}, evaluate={"splits": []})
    out = run_job(job).output
    assert "evaluation" not in json.loads((out / "manifest.json").read_text())
    capsys.readouterr()
    assert main(["report", "models", "--merged", str(layout.home / "merged"), "--output", str(tmp_path / "rep")]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1].startswith("sw-KE: merge (ties, URIEL, K=3; the only merge tried)")
    manifest = json.loads((out / "manifest.json").read_text())
    from merginguriel.io import checkpoint_hash

    assert manifest["hash"] == checkpoint_hash(out)  # the merged weights' hash: equal merges are one model
    dc = DataConfig(source="release", data_path=str(data), root=str(tmp_path))
    for split in ("validation", "test"):
        rec = manifest["evaluation"][split]
        assert rec["accuracy"] == pytest.approx(evaluate_checkpoint(out, ["sw-KE"], split, dc)["sw-KE"]["accuracy"])
        assert rec["base_accuracy"] == pytest.approx(evaluate_checkpoint(layout.base, ["sw-KE"], split, dc)["sw-KE"]["accuracy"])
        assert set(rec["ensembles"]) == {"majority", "weighted_majority", "soft_vote", "logit_vote"}
    report = pd.read_csv(tmp_path / "rep" / "report.csv")
    assert report.loc[0, "test_accuracy"] == pytest.approx(manifest["evaluation"]["test"]["accuracy"])
    assert (tmp_path / "rep" / "sw-KE.png").is_file()
    # bad input: a path with no merged model is a clear error
    assert main(["report", "models", "--merged", str(tmp_path / "data"), "--output", str(tmp_path / "rep2")]) == 2
    assert "no merged models" in capsys.readouterr().err and not (tmp_path / "rep2").exists()


def test_synergy_predictor_shown_only_where_it_can_mean_something(tmp_path):
    from merginguriel.report.build import _loto

    rows = []
    for t in ["a", "b", "c", "d", "e"]:
        for f in (0.1, 0.2, 0.8, 0.9):  # synergy exactly when f > 0.5
            rows.append({"target": t, "merging_effect": f - 0.5, "similarity_mean": f, "num_sources": 3.0})
    notes: list[str] = []
    loto = _loto(pd.DataFrame(rows), notes)
    assert loto is not None and "num_sources" not in set(loto["feature"])  # constant: dropped
    assert loto.set_index("feature").loc["similarity_mean", "loto_accuracy"] == 1.0
    assert any("num_sources" in n for n in notes)
    notes = []
    assert _loto(pd.DataFrame(rows[:8]), notes) is None and "at least 4 targets" in notes[0]  # two targets only
    one_outcome = [{**r, "merging_effect": abs(r["merging_effect"]) + 0.01} for r in rows]
    notes = []
    assert _loto(pd.DataFrame(one_outcome), notes) is None and "both outcomes" in notes[0]


def _merge(method, sim, val, test, sources, base):
    """A report row whose baselines depend on its sources (``base``: source mean, soft vote, best source)."""
    mean, soft, best = base
    rec = {s: {"accuracy": a, "n": 400, "best_source": sources[0], "best_source_accuracy": best + d, "gain": a - best - d,
               "gain_ci": [a - best - d - 0.03, a - best - d + 0.03], "gain_p": 0.2, "source_mean": mean + d,
               "oracle_source": sources[1], "oracle_source_accuracy": best + d + 0.01, "self_accuracy": 0.81 + d,
               "base_accuracy": 0.02, "ensembles": {"majority": soft - 0.02 + d, "weighted_majority": soft - 0.01 + d,
                                                    "soft_vote": soft + d, "logit_vote": soft - 0.005 + d}}
           for s, a, d in (("validation", val, -0.004), ("test", test, 0.0))}
    meta = {"target": "ur-PK", "method": method, "similarity": sim, "num_sources": 3, "include_target": False,
            "weighting": "scores", "params": "{}", "sources": sources, "weights": [0.4, 0.3, 0.3], "run": f"{method}{sim}",
            "key": f"{method}{sim}", "manifest": None}
    return flatten(meta, rec)


def _svg_rows(path) -> list[tuple[str, str]]:
    """(label, value) of every row of a chart, read from the SVG's text by the ids the chart gives them."""
    import xml.etree.ElementTree as ET

    groups = {g.get("id"): "".join(g.itertext()).strip() for g in ET.parse(path).iter() if g.tag.endswith("}g")}
    n = sum(1 for k in groups if k and k.endswith("-label") and k.startswith("row-"))
    return [(groups[f"row-{i}-label"], groups[f"row-{i}-value"]) for i in range(n)]


def _md_rows(summary: str, target: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(label, test accuracy) of the merges and of the baselines in the target's tables of summary.md."""
    section = summary.split(f"## {target}\n", 1)[1].split("\n## ", 1)[0]
    tables = [[[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines() if line.startswith("|")][2:]
              for block in map(str.strip, section.split("\n\n")) if block.startswith("|")]
    merges, baselines = tables
    return [(r[0], r[3]) for r in merges], [(r[0], r[2]) for r in baselines if r[2]]


def test_the_chart_shows_the_tables_numbers(tmp_path):
    """The ur-PK bug: the database's first row is not the merge ranked first (and the two selected other sources,
    so their baselines differ). The chart must show what the table beside it shows, row for row: read from the
    SVG's text and from summary.md."""
    from merginguriel.report import build_report

    uriel, real = ["hi-IN", "bn-BD", "ka-GE"], ["hi-IN", "ja-JP", "bn-BD"]
    table = pd.DataFrame([
        _merge("ties", "uriel", 0.723, 0.735, uriel, (0.599, 0.757, 0.770)),  # first in the database, ranked low
        _merge("neuromerging", "real", 0.772, 0.780, real, (0.668, 0.762, 0.775)),  # ranked first on validation
        _merge("similarity", "real", 0.747, 0.757, real, (0.668, 0.762, 0.775)),
    ])
    out, _ = build_report(table, str(tmp_path / "rep"))
    merges, baselines = _md_rows((out / "summary.md").read_text(), "ur-PK")
    assert [m[0] for m in merges] == ["neuromerging, REAL, K=3", "similarity, REAL, K=3", "ties, URIEL, K=3"]
    assert ("mean of the selected sources (zero-shot)", "0.668") in baselines  # the first-ranked merge's sources
    chart = _svg_rows(out / "ur-PK.svg")
    assert [(label, value.split()[0]) for label, value in chart] == merges + baselines
    assert (out / "ur-PK.png").stat().st_size > 10_000
    files = json.loads((out / "manifest.json").read_text())["files"]
    assert {"ur-PK.png", "ur-PK.svg", "summary.md"} <= set(files)


def test_the_chart_is_readable():
    """Values are written clear of their intervals, the axis spans the values (not 0-1), baselines look different
    from merges and sit on their own band, and a baseline far below every merge is marked at the edge."""
    import matplotlib.pyplot as plt

    from merginguriel.plots import target_figure, wilson

    merges = [("ties", 0.78, 300), ("average", 0.70, 300)]
    baselines = [("best source", 0.74), ("untrained base", 0.02)]
    fig = target_figure(merges, baselines, "t", "test", reference=0.74)
    try:
        ax = fig.axes[0]
        left, right = ax.get_xlim()
        assert 0.5 < left < 0.66 and right - left < 0.35  # 0.70 vs 0.78 fills the axis
        values = {t.get_gid(): t for t in ax.texts}
        for i, (label, v, n) in enumerate(merges):
            text = values[f"row-{i}-value"]
            assert text.get_text() == f"{v:.3f}" and text.get_position()[1] == i
            assert text.get_position()[0] > wilson(v, n)[1]  # right of the interval's upper end
        assert values["row-2-value"].get_position()[0] > 0.74 and values["row-2-value"].get_text() == "0.740"
        assert values["row-3-value"].get_text() == "0.020 (off the axis)" and left <= values["row-3-value"].get_position()[0]
        points = {int(round(line.get_ydata()[0])): line for line in ax.lines if line.get_marker() in ("o", "s", "<")}
        assert [points[i].get_xdata()[0] for i in range(3)] == [0.78, 0.70, 0.74]  # plotted where the labels say
        assert points[0].get_marker() == points[1].get_marker() != points[2].get_marker() == "s"
        assert points[0].get_color() != points[2].get_color()
        (band,) = [p for p in ax.patches if p.get_y() == 1.5]  # the baselines' band: rows 2 and 3 only
        assert band.get_height() == 2
        assert [t.get_color() for t in ax.get_yticklabels()][1:3] == ["black", "dimgray"]
    finally:
        plt.close(fig)
