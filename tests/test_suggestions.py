"""Errors that suggest the fix: a mistyped option, locale, method, config or command gets its closest match ("did you
mean"), and every list of choices in such an error is complete (the methods as the registry holds them)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from merginguriel.cli.main import main
from merginguriel.errors import close_matches

CLI = [sys.executable, "-m", "merginguriel.cli.main"]


def test_close_matches_prefers_the_same_spelling_then_difflib():
    assert close_matches("tr_TR", ["tr-TR", "tl-PH", "tr-CY"]) == ["tr-TR"]
    assert close_matches("TR_tr", ["tr-TR", "tl-PH", "TR-CY"]) == ["tr-TR"]  # case and _/- only: that one alone
    assert close_matches("tiez", ["ties", "dare_ties", "slerp"], 1) == ["ties"]
    assert close_matches("zzzz", ["ties", "slerp"]) == []


def test_a_mistyped_option_names_the_one_meant(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run([*CLI, "merge", "--merge.methd", "ties", "--targett=sw-KE", "--root", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--merge.methd (did you mean --merge.method?)" in proc.stderr
    assert "--targett (did you mean --target?)" in proc.stderr and "merginguriel merge --help" in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, needle", [
    (["merge", "--target", "tr_TR", "--selection.sources", "de-DE"], "unknown locale 'tr_TR'. Did you mean tr-TR?"),
    (["merge", "--selection.sources", "de_DE", "fr-FR", "xx", "--merge.method", "average", "--selection.candidates", "pt_pt"],
     "'pt_pt' (did you mean pt-PT?)"),
    (["merge", "--selection.sources", "de-DE", "fr-FR", "--merge.method", "tiez"], "unknown merge method 'tiez'. Did you mean 'ties'?"),
    (["quickstart", "--config", "quickstrat"], "config 'quickstrat' is neither a file nor a shipped config. Did you mean 'quickstart'?"),
    (["merge", "--target", "sw-KE", "--selection.similarity", "urile"], "unknown selection.similarity 'urile'. Did you mean 'uriel'?"),
    (["merg"], "unknown command 'merg'. Did you mean 'merge'?"),
])
def test_a_mistyped_value_gets_its_closest_match(argv, needle, capsys, tmp_path):
    assert main([*argv, *(["--root", str(tmp_path)] if argv[0] == "merge" else [])]) == 2
    assert needle in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_the_method_list_in_an_error_is_the_whole_registry(capsys, tmp_path):
    import re

    from merginguriel.merging.registry import load_methods

    assert main(["merge", "--root", str(tmp_path), "--selection.sources", "de-DE", "fr-FR", "--merge.method", "tiez"]) == 2
    listed = re.search(r"Known methods \((\d+)\): ([\w, ]+) \(", capsys.readouterr().err)
    names = listed.group(2).split(", ")
    assert {"similarity", "average", "adamerging", "ties", "fisher", "regmean", "slerp"} <= set(names)
    assert sorted(names) == sorted(load_methods()) and int(listed.group(1)) == len(names)
