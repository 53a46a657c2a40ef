"""`merginguriel fit | validate | test`: LightningCLI over IntentClassifier and MassiveDataModule (the recipe parser of
merginguriel.models.finetune).

fit: without ``--config`` it takes the recipe made for its backbone (``fit-embedded`` for the embedded backbone,
``fit-xlmr-base`` for XLM-R); ``--config`` takes a shipped recipe by name or a YAML path.
"""

from __future__ import annotations

import sys


def _value(argv: list[str], option: str):
    for i, tok in enumerate(argv):
        if tok == option and i + 1 < len(argv):
            return argv[i + 1]
        if tok.startswith(option + "="):
            return tok.split("=", 1)[1]
    return None


def recipe_args(argv: list[str]) -> list[str]:
    """A fit without any config gets the recipe made for its backbone (``--print_config`` shows it: what would run)."""
    from merginguriel.configs import config_path
    from merginguriel.models.finetune import recipe_for

    if _value(argv, "--config") is not None or any(a in ("-h", "--help") for a in argv):
        return argv
    recipe = recipe_for(_value(argv, "--model.backbone") or "embedded")
    if recipe is None:
        return argv
    print(f"fit: no --config given; using the {recipe} recipe for this backbone", file=sys.stderr)
    return ["--config", str(config_path(recipe)), *argv]


def main(argv: list[str]) -> int:
    """`argv` starts with the subcommand (fit, validate, test)."""
    from merginguriel.models.finetune import finetune_with, make_cli

    command, rest = argv[0], argv[1:]
    if command == "fit":
        finetune_with(make_cli(recipe_args(rest), run=False))
        return 0
    make_cli([command, *rest], run=True)
    return 0
