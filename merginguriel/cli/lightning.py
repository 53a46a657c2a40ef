"""`merginguriel fit | validate | test`: LightningCLI over IntentClassifier and MassiveDataModule (the recipe parser of
merginguriel.models.finetune).

fit: without ``--config`` it takes the recipe made for its backbone (``fit-embedded`` for the embedded backbone,
``fit-xlmr-base`` for XLM-R); ``--config`` takes a shipped recipe by name or a YAML path.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _value(argv: list[str], option: str):
    for i, tok in enumerate(argv):
        if tok == option and i + 1 < len(argv):
            return argv[i + 1]
        if tok.startswith(option + "="):
            return tok.split("=", 1)[1]
    return None


def recipe_args(argv: list[str]) -> list[str]:
    """A fit without any config gets the recipe made for its backbone (``--print_config`` shows it: what would run)."""
    from merginguriel.checkpoints import EMBEDDED
    from merginguriel.configs import config_path
    from merginguriel.models.finetune import recipe_for

    if _value(argv, "--config") is not None or any(a in ("-h", "--help") for a in argv):
        return argv
    recipe = recipe_for(_value(argv, "--model.backbone") or EMBEDDED)
    if recipe is None:
        return argv
    print(f"fit: no --config given; using the {recipe} recipe for this backbone", file=sys.stderr)
    return ["--config", str(config_path(recipe)), *argv]


def _help_cache(command: str) -> Path:
    """Where the help text of a LightningCLI command is kept: importing Lightning and building the Trainer's parser
    takes seconds, the text only changes with the code and the libraries it is derived from."""
    import hashlib
    from importlib.metadata import version

    here = Path(__file__).resolve().parents[1]
    h = hashlib.sha256(command.encode())
    for rel in ("cli/lightning.py", "models/finetune.py", "models/classifier.py", "data/datamodule.py", "data/config.py"):
        h.update((here / rel).read_bytes())
    for dist in ("lightning", "jsonargparse", "torch"):
        h.update(version(dist).encode())
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "merginguriel" / "help"
    return root / f"{command}-{h.hexdigest()[:16]}.txt"


def _cached_help(command: str) -> bool:
    """Print the cached help of ``command`` if there is one; otherwise build it, print it and cache it."""
    import contextlib
    import io

    path = _help_cache(command)
    try:
        print(path.read_text(encoding="utf-8"), end="")
        return True
    except OSError:
        pass
    from merginguriel.models.finetune import make_cli

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):
        make_cli(["--help"] if command == "fit" else [command, "--help"], run=command != "fit")
    text = buf.getvalue()
    print(text, end="")
    with contextlib.suppress(OSError):  # a read-only home only costs speed
        from merginguriel.io import atomic_write_text

        atomic_write_text(path, text)
    return True


def main(argv: list[str]) -> int:
    """`argv` starts with the subcommand (fit, validate, test)."""
    if argv[1:] in (["--help"], ["-h"]):
        _cached_help(argv[0])
        return 0
    from merginguriel.models.finetune import finetune_with, make_cli

    command, rest = argv[0], argv[1:]
    if command == "fit":
        finetune_with(make_cli(recipe_args(rest), run=False))
        return 0
    make_cli([command, *rest], run=True)
    return 0
