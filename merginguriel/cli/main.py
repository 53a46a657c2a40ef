"""`merginguriel <command>`: one command, LightningCLI style; the one package that parses arguments and prints.

Every command is a typed function registered in ``COMMANDS`` (the litgpt way): its signature and docstring are the
command's options, so every command takes ``-c/--config file.yaml`` (or a shipped config's name), dotted overrides and
``--print_config``; and every command prints the same way, through its printer (merginguriel.cli.show), which gets the
function's result. `fit`, `validate` and `test` are LightningCLI over IntentClassifier and MassiveDataModule. Command
modules are imported only when used, so `--help` answers fast. Nothing below this package imports it.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

from dataclasses import dataclass
from typing import Optional

LIGHTNING = "merginguriel.cli.lightning:main"


@dataclass(frozen=True)
class Command:
    """A command: ``run`` is the typed callable whose signature and docstring are its options (a library function,
    or a command function in this package); ``show`` (merginguriel.cli.show) prints its result and gives the exit
    status. LightningCLI's commands print through Lightning."""

    run: str
    help: str
    show: Optional[str] = None


SHOW = "merginguriel.cli.show"
COMMANDS: dict[str, Command] = {
    "fit": Command(LIGHTNING, "fine-tune a model on one or several locales (LightningCLI)"),
    "validate": Command(LIGHTNING, "evaluate a checkpoint on a validation split (LightningCLI)"),
    "test": Command(LIGHTNING, "evaluate a checkpoint on a test split, write metrics JSON (LightningCLI)"),
    "predict": Command("merginguriel.cli.predict:predict", "write a checkpoint's predictions (JSONL or CSV) for a locale's split",
                       f"{SHOW}:predict"),
    "base": Command("merginguriel.models.base:ensure_base", "save the shared base (pretrained encoder + seeded 60-intent head)",
                    f"{SHOW}:base"),
    "embedded": Command("merginguriel.embedded.build:build_embedded",
                        "build the embedded default: synthetic MASSIVE data and the tiny backbone", f"{SHOW}:embedded"),
    "nxn": Command("merginguriel.evaluation.nxn:compute_nxn",
                   "evaluate every fine-tuned model on every locale: the NxN transfer matrix", f"{SHOW}:nxn"),
    "similarity": Command("merginguriel.similarity.output:write_similarity",
                          "URIEL or REAL language similarity matrix (CSV + heatmap)", f"{SHOW}:similarity"),
    "compatibility": Command("merginguriel.compatibility.output:write_compatibility",
                             "task-vector cosine / CKA compatibility of source models", f"{SHOW}:compatibility"),
    "merge": Command("merginguriel.cli.merge:merge", "one merge job: choose sources, merge (any method), judge against baselines",
                     f"{SHOW}:merge"),
    "experiment": Command("merginguriel.cli.experiment:experiment",
                          "a sweep of merge jobs from a YAML grid into a results database", f"{SHOW}:experiment"),
    "study": Command("merginguriel.cli.study:study",
                     "a whole study: fine-tunes -> NxN -> sweep, resumable, local or SLURM (submitit)", f"{SHOW}:study"),
    "report": Command("merginguriel.cli.report", "verdicts, tables and plots: `report sweep --db ...` or `report models --merged ...`",
                      f"{SHOW}:report"),
    "advise": Command("merginguriel.experiments.advise:advise", "pilot merges on validation data: merge or not?",
                      f"{SHOW}:advise"),
    "quickstart": Command("merginguriel.quickstart:run_quickstart", "the whole flow end to end (embedded default unless configured)",
                          f"{SHOW}:quickstart"),
    "push": Command("merginguriel.cli.push:push", "upload a model folder with its model card to the Hugging Face hub",
                    f"{SHOW}:push"),
}
# Commands with sub-forms: name -> {form: function}
FORMS = {"report": {"sweep": "report_sweep", "models": "report_models"}}
def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: merginguriel <command> [-c CONFIG] [--key.sub value ...] [--print_config]", "", "commands:"]
    lines += [f"  {name:<{width}}  {cmd.help}" for name, cmd in COMMANDS.items()]
    lines += ["", "`merginguriel <command> --help` shows a command's options."]
    return "\n".join(lines)


def _quiet_libraries() -> None:
    """Per-load progress bars and deprecation chatter from the libraries drown the tool's own output."""
    import warnings

    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*pkg_resources is deprecated.*")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when transformers / the hub client are imported
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("urielplus").setLevel(logging.WARNING)


def _unshadow_bin_scripts() -> None:
    """A console script runs with its bin folder first on sys.path, and lang2vec installs a `lang2vec.py` script there
    that would shadow the lang2vec package (URIEL similarity then fails on a missing data file): drop that entry."""
    if sys.path and sys.path[0] and os.path.isfile(os.path.join(sys.path[0], "lang2vec.py")):
        sys.path.pop(0)


def _shipped_configs(argv: list[str]) -> list[str]:
    """``-c NAME`` / ``--config NAME`` naming a shipped config becomes its path; every config file is checked first."""
    from merginguriel.configs import config_path

    out = list(argv)
    for i, tok in enumerate(out[:-1]):
        if tok in ("-c", "--config"):
            out[i], out[i + 1] = "--config", str(config_path(out[i + 1]))
            check_config_file(out[i + 1])
    return out


def check_config_file(path: str) -> None:
    """A config file is UTF-8 YAML holding a mapping of options; anything else is named with what it holds."""
    from merginguriel.io.jsonfile import read_yaml_mapping

    read_yaml_mapping(path, "config", "e.g. `name: sweep`")


def _load(target: str):
    module_name, attr = target.split(":")
    return getattr(importlib.import_module(module_name), attr)


def run(name: str, rest: list[str]) -> int:
    command = COMMANDS[name]
    target = command.run
    rest = _shipped_configs(rest)
    if target == LIGHTNING:
        from merginguriel.cli.lightning import main as lightning_main

        return int(lightning_main([name, *rest]) or 0)
    if name in FORMS:
        forms = FORMS[name]
        if not rest or rest[0] not in forms:
            choice = "|".join(forms)
            print(f"usage: merginguriel {name} {{{choice}}} [options]  (`merginguriel {name} <form> --help`)",
                  file=sys.stderr if rest and rest[0] not in ("-h", "--help") else sys.stdout)
            return 0 if rest and rest[0] in ("-h", "--help") else 2
        func = getattr(importlib.import_module(target), forms[rest[0]])
        prog, rest = f"merginguriel {name} {rest[0]}", rest[1:]
    else:
        func = _load(target)
        prog = f"merginguriel {name}"
    from merginguriel.cli.parse import parse_function_args

    kwargs = parse_function_args(func, rest, prog)
    return int(_load(command.show)(func(**kwargs), kwargs) or 0)


def main(argv: list[str] | None = None) -> int:
    _unshadow_bin_scripts()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from merginguriel import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    _quiet_libraries()
    if name not in COMMANDS:
        from merginguriel.errors import did_you_mean

        print(f"merginguriel: unknown command {name!r}.{did_you_mean(name, COMMANDS)}\n\n{_usage()}", file=sys.stderr)
        return 2
    from merginguriel.cli.errors import boundary

    status = [0]
    with boundary(name, status):
        status[0] = run(name, rest)
    return status[0]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
