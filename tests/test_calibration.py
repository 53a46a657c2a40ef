"""The calibration benchmark (benchmarks/calibration.py): each number of benchmarks/calibration_metrics.py against an
independent computation on hand-made inputs whose answers differ from what a plausible mistake would give; then (slow)
a CI-sized run of the script itself -- the real `merginguriel study` on 6 locales and 3 targets -- whose results file
must hold every row, with numbers that recompute from the results database and the NxN files."""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata, spearmanr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))  # the measuring code lives there

import calibration_metrics as cm  # noqa: E402

NAMES = ["af-ZA", "cy-GB", "de-DE", "sw-KE", "vi-VN"]


def _point(target, similarity, k, method, val, **test) -> dict:
    row = {"target": target, "similarity": similarity, "num_sources": k, "method": method, "val_accuracy": val,
           "run": f"{target}{similarity}{k}{method}", "sources": ["de-DE", "af-ZA", "cy-GB"][:k]}
    row.update({f"test_{key}": v for key, v in test.items()})
    return row


def _points() -> pd.DataFrame:
    """Three targets x {real, uriel} x K {2, 3} x {similarity, ties}, with numbers that differ across rows."""
    rng = np.random.default_rng(3)
    rows = []
    for t in ("sw-KE", "vi-VN", "cy-GB"):
        for sim in ("real", "uriel"):
            for k in (2, 3):
                for method in ("similarity", "ties"):
                    gain = float(rng.normal(0, 0.05))
                    rows.append(_point(t, sim, k, method, round(float(rng.uniform(0.5, 0.8)), 2), merging_effect=float(rng.normal(0, 0.03)),
                                       gain=gain, gain_ci_low=gain - 0.03, gain_ci_high=gain + 0.03,
                                       source_mean=float(rng.uniform(0.4, 0.7)), self_accuracy=float(rng.uniform(0.75, 0.85)),
                                       accuracy=float(rng.uniform(0.4, 0.8))))
    return pd.DataFrame(rows)


def test_merges_and_the_share_with_a_negative_merging_effect():
    points = _points()
    real3 = cm.merges(points, "real", 3, "similarity")
    want = [r for r in points.to_dict("records") if (r["similarity"], r["num_sources"], r["method"]) == ("real", 3, "similarity")]
    assert real3["target"].tolist() == sorted(r["target"] for r in want)
    neg, n = cm.negative_effect_count(real3)
    assert (neg, n) == (sum(r["test_merging_effect"] < 0 for r in want), 3)
    assert 0 < neg < 3  # the inputs can tell a sign mistake
    with pytest.raises(ValueError, match="more than one"):
        cm.merges(pd.concat([points, points.iloc[:1]]), "real", 2, "similarity")


def test_the_merge_chosen_on_validation_and_the_worst_merge():
    points = _points()
    # a tie on validation within sw-KE: the merge with fewer sources wins, as in the report
    points.loc[(points["target"] == "sw-KE") & (points["run"] == "sw-KEuriel2ties"), "val_accuracy"] = 0.95
    points.loc[(points["target"] == "sw-KE") & (points["run"] == "sw-KEreal3ties"), "val_accuracy"] = 0.95
    chosen = cm.chosen_on_validation(points).set_index("target")
    test_best = 0
    for t, group in points.groupby("target"):
        best = sorted(group.to_dict("records"), key=lambda r: (-r["val_accuracy"], r["num_sources"], r["method"], r["run"]))[0]
        assert chosen.at[t, "run"] == best["run"]
        test_best += chosen.at[t, "test_accuracy"] == group["test_accuracy"].max()
    assert chosen.at["sw-KE", "run"] == "sw-KEuriel2ties" and test_best < 3  # choosing on test would differ here
    chosen = chosen.reset_index()
    chosen["test_gain_ci_low"], chosen["test_gain_ci_high"] = [-0.02, 0.01, -0.05], [0.03, 0.05, -0.01]  # crosses 0, above, below
    chosen["test_overall_ci_low"] = [-0.01, 0.02, 0.03]
    assert cm.significant_gains(chosen) == 1 and cm.significant_gains(chosen, "overall") == 2
    worst = cm.worst_merge(points)
    assert worst["test_gain"] == min(points["test_gain"]) and worst["run"] == points.loc[points["test_gain"].idxmin(), "run"]


def test_quality_effect_spearman_against_scipy():
    points = _points()
    for k in (2, 3):
        rows = cm.merges(points, "real", k, "similarity")
        quality = [r["test_source_mean"] / r["test_self_accuracy"] for r in rows.to_dict("records")]
        want = spearmanr(quality, rows["test_merging_effect"]).statistic
        assert cm.quality_effect_spearman(rows) == pytest.approx(want)
    rng = np.random.default_rng(0)
    for _ in range(20):  # the shared rank correlation, ties included
        x, y = rng.integers(0, 5, 30), rng.integers(0, 5, 30)
        assert cm.spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)


def _nxn(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    v = rng.choice([0.4, 0.5, 0.55, 0.6, 0.7], size=(5, 5))
    np.fill_diagonal(v, rng.uniform(0.78, 0.86, 5))
    return pd.DataFrame(v, index=NAMES, columns=NAMES)


def test_best_sources_are_chosen_on_validation_and_judged_on_test():
    val, test = _nxn(1), _nxn(2)
    targets = ["sw-KE", "cy-GB", "vi-VN"]
    best = cm.best_sources({"validation": val, "test": test}, targets, NAMES).set_index("target")
    picked_on_test = 0
    for t in targets:
        pool = [c for c in NAMES if c != t]
        top = max(val.at[c, t] for c in pool)
        source = [c for c in pool if val.at[c, t] == top][0]  # ties: the earlier candidate
        assert best.at[t, "source"] == source
        assert best.at[t, "ratio"] == pytest.approx(test.at[source, t] / test.at[t, t])
        picked_on_test += source == max(pool, key=lambda c: test.at[c, t])
    assert picked_on_test < len(targets)  # reading test would choose otherwise here


def test_nxn_numbers():
    test = _nxn(4)
    off = [(s, t) for s in NAMES for t in NAMES if s != t]
    assert sorted(cm.zero_shot_ratios(test)) == pytest.approx(sorted(test.at[s, t] / test.at[t, t] for s, t in off))
    assert cm.share_below(test, 0.5) == pytest.approx(sum(test.at[s, t] < 0.5 for s, t in off) / 20)
    assert 0 < cm.share_below(test, 0.5) < 1
    assert cm.self_accuracy(test).to_dict() == {loc: test.at[loc, loc] for loc in NAMES}


def test_transfer_ranks_of_the_picked_sources_against_scipy():
    test = _nxn(5)
    for t in NAMES:
        pool = [c for c in NAMES if c != t]
        want = rankdata([-test.at[c, t] for c in pool], method="average")
        assert cm.transfer_ranks(test, t).loc[pool].tolist() == pytest.approx(list(want))
    rows = pd.DataFrame([{"target": "sw-KE", "sources": ["de-DE", "cy-GB"]}, {"target": "af-ZA", "sources": ["vi-VN"]}])
    ranks = {t: dict(zip([c for c in NAMES if c != t], rankdata([-test.at[c, t] for c in NAMES if c != t])))
             for t in ("sw-KE", "af-ZA")}
    assert cm.pick_ranks(rows, {"validation": _nxn(6), "test": test}) == pytest.approx([ranks["sw-KE"]["de-DE"], ranks["sw-KE"]["cy-GB"], ranks["af-ZA"]["vi-VN"]])


def test_uriel_views_against_kernels_and_transfer():
    rng = np.random.default_rng(6)
    a = rng.uniform(0, 1, (5, 5))
    view = pd.DataFrame((a + a.T) / 2, index=NAMES, columns=NAMES)
    kernel = rng.uniform(-1, 1, (5, 5))
    kernel = (kernel + kernel.T) / 2
    pairs = [(i, j) for i in range(5) for j in range(i + 1, 5)]
    want = spearmanr([view.iat[i, j] for i, j in pairs], [kernel[i, j] for i, j in pairs]).statistic
    assert cm.view_kernel_spearman(view, kernel) == pytest.approx(want)
    test = _nxn(7)
    ordered = [(s, t) for s in NAMES for t in NAMES if s != t]
    want = spearmanr([view.at[t, s] for s, t in ordered], [test.at[s, t] for s, t in ordered]).statistic
    assert cm.view_transfer_spearman(view, test) == pytest.approx(want)
    # the view is read as S.loc[target, source]: an asymmetric view tells the orientation
    asym = pd.DataFrame(a, index=NAMES, columns=NAMES)
    want = spearmanr([asym.at[t, s] for s, t in ordered], [test.at[s, t] for s, t in ordered]).statistic
    wrong = spearmanr([asym.at[s, t] for s, t in ordered], [test.at[s, t] for s, t in ordered]).statistic
    assert cm.view_transfer_spearman(asym, test) == pytest.approx(want) and not math.isclose(want, wrong)


# -- the script, CI-sized ----------------------------------------------------------------------------------------------
CI_LOCALES = ["es-ES", "pt-PT", "ca-ES", "hi-IN", "ur-PK", "sw-KE"]
CI_TARGETS = ["pt-PT", "ur-PK", "sw-KE"]
ROW_IDS = ["1", "2a", "2b", "3a", "3b", "4a", "4b", "4c", "5a", "5b", "6a", "6b", "6c", "7a", "7b", "7c", "7d"]


def _cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def _number(text: str) -> float:
    return float(re.match(r"[+-]?\d+(\.\d+)?", text).group(0))


@pytest.mark.slow
def test_calibration_script_on_six_locales(tmp_path):
    import yaml

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "merginguriel.cli.main", "embedded", "--root", "checkpoints", "--train_per_intent",
                    "8", "--dev_per_intent", "4", "--test_per_intent", "5"], cwd=tmp_path, env=env, check=True,
                   capture_output=True, timeout=600)
    shipped = yaml.safe_load((REPO / "configs" / "study-calibration.yaml").read_text())
    config = {**shipped, "name": "cal-ci", "locales": CI_LOCALES, "root": "checkpoints",
              "fit_overrides": {"trainer": {"max_epochs": 3}}}
    config["sweep"]["grid"]["target"] = CI_TARGETS
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "calibration.py"), "--config", "study.yaml",
                           "--out", "cal.md"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    check_results(tmp_path)

    # a rerun reuses every stage, and says so in the timing table
    again = subprocess.run([sys.executable, str(REPO / "benchmarks" / "calibration.py"), "--config", "study.yaml",
                            "--out", "cal.md"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    runs = [x for x in (tmp_path / "cal.md").read_text().splitlines() if re.match(r"\| \d{4}-\d\d-\d\d", x)]
    assert len(runs) == 2 and "0 to run" in runs[1] and "24 done already" in runs[1]


def check_results(folder: Path) -> None:
    """The results file holds every row, and its numbers recompute from the database and the NxN files."""
    text = (folder / "cal.md").read_text()
    assert text.startswith("# Calibration") and "Date: " in text and "Machine: " in text

    # every row, in order, each with a verdict
    rows = {}
    for line in text.splitlines():
        cells = _cells(line)
        if len(cells) == 6 and cells[0] in ROW_IDS:
            rows[cells[0]] = cells
    assert list(rows) == ROW_IDS
    assert all(r[4] in ("met", "NOT met") for i, r in rows.items() if i != "3b")  # every number could be computed here
    assert rows["3b"][4] == "reported"
    timing = next(_cells(x) for x in text.splitlines() if re.match(r"\| \d{4}-\d\d-\d\d", x))
    assert all(re.match(r"\d+(\.\d)? (s|min)", c) for c in timing[1:6]), timing
    assert "52 to run" not in text and "6 to run" in text  # what the stages did
    per_target = [ln for ln in text.split("## Per target")[1].splitlines() if ln.startswith("| ") and _cells(ln)[0] in CI_TARGETS]
    assert [_cells(ln)[0] for ln in per_target] == CI_TARGETS

    # the numbers, recomputed from the database and the NxN files without the script's code
    db = sqlite3.connect(folder / "checkpoints" / "experiments" / "cal-ci" / "results.sqlite")
    points = [dict(zip(("target", "similarity", "k", "method", "key", "metrics", "selection"), r)) for r in db.execute(
        "SELECT target, similarity, num_sources, method, key, metrics, selection FROM points WHERE status = 'done'")]
    assert len(points) == 24
    for p in points:
        p["test"] = json.loads(p["metrics"])["splits"]["test"]
        p["val"] = json.loads(p["metrics"])["splits"]["validation"]
        p["sources"] = json.loads(p["selection"])["sources"]
    real3 = sorted((p for p in points if (p["similarity"], p["k"], p["method"]) == ("real", 3, "similarity")),
                   key=lambda p: p["target"])
    neg = sum(p["test"]["merging_effect"] < 0 for p in real3)
    assert rows["1"][2].startswith(f"{neg / 3:.3f} ({neg} of 3 targets")
    chosen = {}
    for p in sorted(points, key=lambda p: (-p["val"]["accuracy"], p["k"], p["method"], p["key"])):
        chosen.setdefault(p["target"], p)
    sig = sum(c["test"]["gain_ci"][0] > 0 for c in chosen.values())
    assert rows["2a"][2].startswith(f"{sig / 3:.3f} ({sig} of 3 targets")
    assert _number(rows["2b"][2]) == pytest.approx(100 * min(p["test"]["gain"] for p in points), abs=0.051)
    rho = spearmanr([p["test"]["source_mean"] / p["test"]["self_accuracy"] for p in real3],
                    [p["test"]["merging_effect"] for p in real3]).statistic
    assert _number(rows["3a"][2]) == pytest.approx(rho, abs=5e-4)
    # the judge picked the best of all candidates on validation itself: the same model, so the same ratio
    by_target = {p["target"]: p["test"]["best_overall_accuracy"] / p["test"]["self_accuracy"] for p in real3}
    assert _number(rows["4a"][2]) == pytest.approx(float(np.median(list(by_target.values()))), abs=5e-4)
    test = pd.read_csv(folder / "checkpoints" / "embedded-tiny" / "nxn" / "test" / "evaluation_matrix.csv", index_col=0)
    for rid, sim in (("5a", "uriel"), ("5b", "real")):
        ranks = []
        for p in (p for p in points if (p["similarity"], p["k"], p["method"]) == (sim, 3, "similarity")):
            pool = [c for c in CI_LOCALES if c != p["target"]]
            r = dict(zip(pool, rankdata([-test.at[c, p["target"]] for c in pool])))
            ranks += [r[s] for s in p["sources"]]
        assert _number(rows[rid][2]) == pytest.approx(float(np.median(ranks)), abs=0.051), rid
    ratios = [test.at[s, t] / test.at[t, t] for s in CI_LOCALES for t in CI_LOCALES if s != t]
    assert _number(rows["7b"][2]) == pytest.approx(float(np.median(ratios)), abs=5e-4)
    assert _number(rows["7a"][2]) == pytest.approx(test.at["hi-IN", "ur-PK"] / test.at["ur-PK", "ur-PK"], abs=5e-4)
