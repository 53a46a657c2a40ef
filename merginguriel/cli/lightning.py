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


def resolve_configs(argv: list[str]) -> list[str]:
    """``--config NAME`` for a shipped recipe becomes its path; a fit without any config gets its backbone's recipe."""
    from merginguriel.configs import config_path

    out = list(argv)
    for i, tok in enumerate(out[:-1]):
        if tok in ("--config", "-c"):
            out[i] = "--config"
            out[i + 1] = str(config_path(out[i + 1]))
    return out


def recipe_args(argv: list[str]) -> list[str]:
    from merginguriel.configs import config_path
    from merginguriel.models.finetune import recipe_for

    if _value(argv, "--config") is not None or any(a in ("--print_config", "-h", "--help") for a in argv):
        return argv
    recipe = recipe_for(_value(argv, "--model.backbone") or "embedded")
    if recipe is None:
        return argv
    print(f"fit: no --config given; using the {recipe} recipe for this backbone", file=sys.stderr)
    return ["--config", str(config_path(recipe)), *argv]


def main(argv: list[str]) -> int:
    """`argv` starts with the subcommand (fit, validate, test)."""
    from merginguriel.models.finetune import finetune_with, make_cli

    sys.argv = sys.argv[:1]  # the arguments come through `args`; LightningCLI warns when both are set
    command, rest = argv[0], resolve_configs(argv[1:])
    if command == "fit":
        finetune_with(make_cli(recipe_args(rest), run=False))
        return 0
    make_cli([command, *rest], run=True)
    return 0
