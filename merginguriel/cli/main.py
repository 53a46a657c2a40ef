"""`merginguriel <subcommand>`: one command, LightningCLI style.

`fit`, `validate`, `test` and `predict` are LightningCLI subcommands (model + datamodule + trainer). The others are
jsonargparse parsers over typed signatures, so every subcommand takes `--config file.yaml`, dotted overrides and
`--print_config`. Subcommand modules are imported only when used, to keep start-up fast.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

from merginguriel.errors import InputError

# name -> ("module:function", one-line help). Each function takes argv (list[str]) and returns an exit status or None.
COMMANDS: dict[str, tuple[str, str]] = {
    "fit": ("merginguriel.cli.lightning:main", "fine-tune a model on one or several locales (LightningCLI)"),
    "validate": ("merginguriel.cli.lightning:main", "evaluate a checkpoint on a validation split (LightningCLI)"),
    "test": ("merginguriel.cli.lightning:main", "evaluate a checkpoint on a test split, write metrics JSON (LightningCLI)"),
    "predict": ("merginguriel.cli.lightning:main", "predict intents (LightningCLI)"),
    "base": ("merginguriel.models.base:cli", "save the shared base (pretrained encoder + seeded 60-intent head)"),
    "embedded": ("merginguriel.embedded.build:cli", "build the embedded default: synthetic MASSIVE data and the tiny backbone"),
    "merge": ("merginguriel.merging.cli:main", "merge fine-tuned models (every static method, AdaMerging, Fisher, RegMean)"),
    "nxn": ("merginguriel.evaluation.nxn:cli", "evaluate every fine-tuned model on every locale: the NxN transfer matrix"),
    "similarity": ("merginguriel.similarity.cli:main", "URIEL or REAL language similarity matrix (CSV + heatmap)"),
    "compatibility": ("merginguriel.compatibility.cli:main", "task-vector cosine / CKA compatibility of source models"),
    "report": ("merginguriel.report.cli:main", "compare merges against every baseline: tables and plots"),
    "experiment": ("merginguriel.experiments.cli:main", "run a sweep from a YAML grid into a results database"),
    "advise": ("merginguriel.experiments.advise:cli", "pilot merges on validation data: merge or not?"),
    "quickstart": ("merginguriel.quickstart:cli", "the whole flow end to end (embedded default unless configured)"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: merginguriel <subcommand> [--config FILE.yaml] [--key.sub value ...] [--print_config]", "", "subcommands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`merginguriel <subcommand> --help` shows a subcommand's options."]
    return "\n".join(lines)


def _quiet_libraries() -> None:
    """Per-load progress bars and deprecation chatter from the libraries drown the tool's own output."""
    import warnings

    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*pkg_resources is deprecated.*")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass


def _unshadow_bin_scripts() -> None:
    """A console script runs with its bin folder first on sys.path, and lang2vec installs a `lang2vec.py` script there
    that would shadow the lang2vec package (URIEL similarity then fails on a missing data file): drop that entry."""
    if sys.path and sys.path[0] and os.path.isfile(os.path.join(sys.path[0], "lang2vec.py")):
        sys.path.pop(0)


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
    if name not in COMMANDS:
        print(f"merginguriel: unknown subcommand {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("urielplus").setLevel(logging.WARNING)
    _quiet_libraries()
    target, _ = COMMANDS[name]
    module_name, func_name = target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    try:
        if module_name == "merginguriel.cli.lightning":
            status = func([name, *rest])
        else:
            status = func(rest)
    except InputError as err:
        print(f"merginguriel {name}: error: {err}", file=sys.stderr)
        return 2
    return int(status or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
