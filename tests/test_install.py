"""Installed means usable: the package built as a wheel and installed NON-editable into a fresh virtual environment
runs its commands, and a small quick start, from an empty folder -- so the configs and data files it needs really ship
with it, and nothing reads the source tree or the working folder.

The dependencies are not downloaded again: the fresh environment sees this environment's site-packages through a
``.pth`` file (a plain path line, so this environment's editable install of merginguriel is not picked up).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {**env, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PIP_NO_INDEX": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONNOUSERSITE": "1"}


def sh(cmd: list, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def shipped_files() -> set[str]:
    """Data files in the source tree that the installed package must hold (wheel paths)."""
    configs = REPO / "configs"  # the top-level folder ships as merginguriel/configs
    files = {f"merginguriel/configs/{p.relative_to(configs).as_posix()}"
             for p in [*configs.glob("**/*.yaml"), *configs.glob("**/*.md")]}
    return files | {"merginguriel/embedded/typology_table.json"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the package installed from a wheel built from a copy of the source tree; returns its bin."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"  # a copy, so the build's own files (build/, *.egg-info) never land in the repository
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for name in ("merginguriel", "configs"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    venv = tmp / "venv"
    sh([sys.executable, "-m", "venv", "--without-pip", venv], tmp)
    python = venv / "bin" / "python"
    purelib = Path(sh([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp).stdout.strip())
    (purelib / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # this environment's packages
    sh([python, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", tmp / "dist", src], tmp)
    (wheel,) = (tmp / "dist").glob("merginguriel-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = shipped_files() - names
    assert not missing, f"the wheel lacks {sorted(missing)}"
    assert not any(n.startswith(("tests/", "benchmarks/", "checkpoints/", "configs/")) for n in names)
    # --ignore-installed: the editable merginguriel visible through the .pth is neither uninstalled nor reused
    sh([python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--ignore-installed", wheel], tmp)
    return venv / "bin"


def test_installed_package_runs_from_an_empty_folder(installed, tmp_path):
    work = tmp_path / "empty"
    work.mkdir()
    python, exe = installed / "python", installed / "merginguriel"
    where = sh([python, "-c", "import merginguriel, merginguriel.configs as c; print(merginguriel.__file__); "
                "print(c.config_path('quickstart'))"], work).stdout.split()
    site = str(installed.parent / "lib")
    assert all(p.startswith(site) for p in where), where  # the installed copy, not the source tree

    # every command answers --help from here (each parses its own options: nothing imported from the source tree)
    helps = ("import sys\nfrom merginguriel.cli.main import COMMANDS, main\nfor name in COMMANDS:\n"
             "    try:\n        code = main([name, '--help'])\n    except SystemExit as e:\n        code = e.code\n"
             "    assert code in (0, None), (name, code)\nprint('helped', len(COMMANDS))")
    assert "helped" in sh([python, "-c", helps], work).stdout
    shown = sh([exe, "quickstart", "--config", "quickstart", "--print_config"], work).stdout
    assert "fit_config: fit-embedded" in shown and "sweep: quickstart_sweep" in shown

    # a CI-sized quick start: a small embedded build, three locales, short fits, two merges
    sh([exe, "embedded", "--root", "checkpoints", "--train_per_intent", "6", "--dev_per_intent", "3", "--test_per_intent", "3"], work)
    fit = yaml.safe_load(Path(where[1]).with_name("fit-embedded.yaml").read_text())  # the installed recipe
    fit["trainer"]["max_epochs"] = 2
    (work / "fit.yaml").write_text(yaml.safe_dump(fit))
    locales = ["es-ES", "it-IT", "pt-PT"]
    sweep = {"name": "installed", "fixed": {"backbone": "embedded", "root": "checkpoints",
                                            "data": {"source": "embedded", "max_length": 64},
                                            "selection": {"num_sources": 2, "candidates": locales}},
             "grid": {"selection.similarity": ["uriel"], "merge.method": ["similarity", "ties"]}}
    (work / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    proc = sh([exe, "quickstart", "--sweep", "sweep.yaml", "--fit_config", "fit.yaml", "--locales", f"[{','.join(locales)}]",
               "--torch_threads", "1"], work)
    verdicts = proc.stdout.strip().split("Verdicts (merge chosen on validation, judged on test):\n")[1].splitlines()
    assert len(verdicts) == 2 and all(v[:7] in {f"{loc}: " for loc in locales} and "95% CI" in v for v in verdicts)
    assert (work / "checkpoints" / "experiments" / "installed" / "report" / "summary.md").is_file()
    for loc in locales:
        assert (work / "checkpoints" / "embedded-tiny" / "finetuned" / loc / "README.md").is_file()
