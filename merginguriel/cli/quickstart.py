"""`merginguriel quickstart`."""

from __future__ import annotations

from typing import Optional


def quickstart(
    sweep: str = "quickstart_sweep",
    locales: Optional[list[str]] = None,
    fit_config: str = "fit-embedded",
    report: Optional[str] = None,
    device: str = "auto",
    torch_threads: int = 0,
) -> int:
    """The whole flow end to end (the embedded default unless configured), ending with one verdict per target.

    Args:
        sweep: the sweep of merge jobs (a shipped config name or a YAML path); its fixed settings give backbone, root, data.
        locales: locales to fine-tune (default: the sweep's targets and candidates).
        fit_config: the fit recipe (a shipped name or a path).
        report: the report folder (default: beside the sweep's results database).
        device: device for evaluations.
        torch_threads: CPU threads for torch (0: torch's default; the tiny embedded backbone is fastest on 1).
    """
    from merginguriel.quickstart import run_quickstart

    _, found = run_quickstart(sweep, locales, fit_config, report, device, torch_threads)
    print("\nVerdicts (merge chosen on validation, judged on test):")
    for v in found:
        print(v.line)
    return 0
