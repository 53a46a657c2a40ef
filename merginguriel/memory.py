"""The one memory probe: peak memory of a job measured inside the process that runs it.

``ru_maxrss`` is the process's peak since it started (so a sweep's second merge reports the first's peak) and a child's
value starts from its parent's peak at fork and survives exec. Linux's ``VmHWM`` can be reset (writing ``5`` to
``/proc/self/clear_refs``), so each job gets its own peak; CUDA peaks are reset per job too.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(field: str) -> Optional[float]:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        return None
    return None


def rss_mb() -> float:
    """Resident memory now (MiB)."""
    kb = _status_kb("VmRSS")
    if kb is not None:
        return kb / 1024
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _reset_hwm() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def process_peak_mb() -> float:
    """This process's peak resident memory (MiB) since it started or since the last reset."""
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb / 1024
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


class PeakMemory:
    """``with PeakMemory() as probe: ...`` then ``probe.record()``: the job's peak resident memory (and CUDA peak).

    On Linux the high-water mark is reset on entry, so the peak is this job's even when an earlier job in the same
    process used more; elsewhere it falls back to the process peak and says so (``per_job: false``).
    """

    def __init__(self, device=None):
        self.device = device
        self.start_mb = 0.0
        self.peak_mb = 0.0
        self.per_job = False
        self.cuda_peak_mb: Optional[float] = None

    def _cuda(self) -> bool:
        try:
            import torch
        except ImportError:  # pragma: no cover
            return False
        if not torch.cuda.is_available():
            return False
        return self.device is None or str(self.device).startswith("cuda")

    def __enter__(self) -> "PeakMemory":
        cuda = self._cuda()  # imports torch first, so its import is not counted as the job's memory
        self.start_mb = rss_mb()
        self.per_job = _reset_hwm()
        if cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> "PeakMemory":
        self.peak_mb = max(process_peak_mb(), self.start_mb)
        if self._cuda():
            import torch

            self.cuda_peak_mb = torch.cuda.max_memory_allocated() / 2**20
        return self

    def record(self) -> dict:
        """The fields every manifest records under ``memory``."""
        out = {
            "peak_rss_mb": round(self.peak_mb, 1),
            "rss_start_mb": round(self.start_mb, 1),
            "peak_rss_delta_mb": round(self.peak_mb - self.start_mb, 1),
            "per_job": self.per_job,
        }
        if self.cuda_peak_mb is not None:
            out["cuda_peak_mb"] = round(self.cuda_peak_mb, 1)
        return out
