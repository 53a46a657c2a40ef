"""The one streaming merge core: plan blocks, run the pre-passes the method's ``Reads`` ask for, merge block by block,
write atomically. It runs a checked plan (merginguriel.merging.validate) and checks nothing again but the values it
reads (NaN/inf).

Memory: a unit of blocks is read for the base and then for each source in turn (one file open at a time, closed after
the unit), while the previous unit is merged, so the working set is about 2K + 6 blocks; the block size is the memory
budget divided by that, which keeps peak memory flat as K grows. The merged weights go straight to disk (writer.SafetensorsWriter).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from merginguriel.errors import InputError
from merginguriel.io import atomic_dir
from merginguriel.memory import PeakMemory
from merginguriel.merging.checkpoint import Item
from merginguriel.merging.manifest import write_merged_manifest
from merginguriel.merging.registry import Block, Where
from merginguriel.merging.spec import RunOptions
from merginguriel.merging.threshold import RadixSelect, SampledSelect, kth_largest_abs
from merginguriel.merging.validate import OUT_DTYPES, Plan
from merginguriel.merging.writer import SafetensorsWriter

_SKIP_FILES = {"manifest.json", "README.md", "model.safetensors.index.json", "pytorch_model.bin.index.json"}
_SKIP_SUFFIXES = (".safetensors", ".bin", ".pt", ".ckpt", ".pth")
_MAX_BLOCK_ELEMS = (30 << 20) // 4  # below glibc's largest mmap threshold (32 MB), see _keep_freed_memory


def _keep_freed_memory() -> None:
    """Let glibc keep freed blocks for reuse instead of returning them to the OS.

    Every block is allocated, used and freed once per unit; by default glibc maps large allocations freshly and unmaps
    them on free, so each new block pays a page fault per 4 KiB page (measured here: most of a merge's time). With
    the mmap threshold at its maximum (blocks stay below it, see _MAX_BLOCK_ELEMS) and up to 128 MB of free heap kept,
    the same few block-sized chunks are reused. Long-lived allocations made between blocks would fragment that heap,
    so the pre-pass statistics allocate their buffers up front (threshold.SampledSelect).
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 128 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        return


def plan_units(plan: Plan, memory_mb: float) -> tuple[list[list[Item]], dict[str, int]]:
    """Split tensors into row blocks no larger than the budget and group small ones; also count blocks per tensor."""
    k = len(plan.sources)
    # two units are in flight (one merged, the next read ahead): 2 x (K sources + base) + method temporaries
    block_elems = max(1, min(int(memory_mb * 2**20 / 4 / (2 * k + 6)), _MAX_BLOCK_ELEMS))
    units: list[list[Item]] = [[]]
    used = 0
    nblocks: dict[str, int] = {}
    order = sorted(plan.base.checkpoint.tensors.values(), key=lambda t: (str(t.file), t.offset))
    for info in order:
        rows = info.shape[0] if info.shape else 1
        row_numel = math.prod(info.shape[1:]) if info.shape else 1
        per = rows if info.numel <= block_elems else max(1, block_elems // max(1, row_numel))
        starts = list(range(0, rows, per)) or [0]
        nblocks[info.name] = len(starts)
        for a in starts:
            b = min(rows, a + per) if rows else 0
            size = (b - a) * row_numel
            if units[-1] and used + size > block_elems:
                units.append([])
                used = 0
            units[-1].append(Item(info.name, a, b))
            used += size
    return [u for u in units if u], nblocks


class _Reader:
    """Reads units of blocks for the base, the sources (as models or task vectors, transformed as the method reads
    them) and statistics."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.reads = plan.reads
        self.tensors = plan.base.checkpoint.tensors
        self.merged = set(plan.merged)
        self.device = plan.device
        self.sources_checked = False  # set once a pre-pass has checked every merged source block for NaN/inf
        self.keys = plan.source_keys
        self._read_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="merge-read")

    def close(self) -> None:
        self._read_pool.shutdown(wait=True, cancel_futures=True)

    def _finite(self, t: torch.Tensor, where: str, name: str) -> None:
        if not t.is_floating_point() or t.numel() == 0:
            return
        # one BLAS dot product (the fastest full pass measured here) finds any NaN/inf, as they propagate; only a
        # non-finite result needs the exact check, which also tells a real NaN/inf from a sum that merely overflowed
        flat = t.reshape(-1)
        if flat.dtype != torch.float32:
            flat = flat.float()
        if math.isfinite(float(torch.dot(flat, flat))):
            return
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            raise InputError(
                f"{where}: tensor {name} holds {bad} NaN/inf value(s); the checkpoint is broken "
                "(diverged training or a bad save): re-train or re-export it, or leave it out"
            )

    def base(self, unit: list[Item]) -> dict[Item, torch.Tensor]:
        """The base's blocks the unit needs: all of them, or only the unmerged ones for a method that ignores the base."""
        items = unit if self.reads.base else [it for it in unit if it.name not in self.merged]
        vals = self.plan.base.checkpoint.read(items)
        for item, t in vals.items():
            if not (self.sources_checked and item.name in self.merged):  # a pre-pass read and checked it already
                self._finite(t, f"base {self.plan.base.path}", item.name)
        return vals

    def _float(self, t: torch.Tensor) -> torch.Tensor:
        # the read buffer is ours: convert only when the dtype or the device differ
        if t.dtype == torch.float32 and t.device == self.device:
            return t
        return t.to(self.device, torch.float32)

    def stacked(self, unit: list[Item]) -> dict[Item, torch.Tensor] | None:
        """One [K, *block] float32 buffer per merged block, which the sources are read straight into (CPU only)."""
        if self.device.type != "cpu":
            return None
        k = len(self.plan.sources)
        out = {}
        for it in unit:
            if it.name in self.merged:
                shape = self.tensors[it.name].shape
                out[it] = torch.empty((k, it.stop - it.start, *shape[1:]) if shape else (k,), dtype=torch.float32)
        return out

    def sources(
        self, unit: list[Item], base: dict[Item, torch.Tensor], stacked: dict[Item, torch.Tensor] | None = None
    ) -> Iterator[tuple[int, dict[Item, torch.Tensor]]]:
        items = [it for it in unit if it.name in self.merged]
        task_vectors = self.reads.inputs == "task_vectors"
        transform = self.reads.transform
        cks = [s.checkpoint for s in self.plan.sources]
        futures = None
        if stacked is not None:
            # reading is a memory copy out of the page cache that releases the GIL: two readers use both cores
            futures = [self._read_pool.submit(ck.read, items, {it: stacked[it][i] for it in items}) for i, ck in enumerate(cks)]
        for i, ck in enumerate(cks):
            vals = futures[i].result() if futures is not None else ck.read(items)
            out = {}
            for item in items:
                t = vals.pop(item)
                if not (self.reads.carries_nonfinite or self.sources_checked):
                    self._finite(t, f"source {ck.folder}", item.name)
                t = self._float(t)
                if task_vectors:
                    t.sub_(base[item].to(self.device, torch.float32))
                    if transform is not None:
                        shape = self.tensors[item.name].shape
                        transform(t, Where(item.name, shape, (item.start, item.stop), self.plan.seed, self.keys[i]))
                out[item] = t
            del vals
            yield i, out

    def check_output(self, result: torch.Tensor, item: Item) -> None:
        """For methods whose output carries any NaN/inf of their inputs: check the output, and name the source if not finite."""
        try:
            self._finite(result, "merged", item.name)
        except InputError:
            for s in self.plan.sources:
                self._finite(s.checkpoint.read([item])[item], f"source {s.path}", item.name)
            raise InputError(
                f"the merged values of tensor {item.name} overflowed (inf) although every source is finite; "
                "check the weights and the method's scaling (lam)"
            ) from None

    def base_block(self, base: dict[Item, torch.Tensor], item: Item, pop: bool = False) -> torch.Tensor | None:
        if not self.reads.base:
            return None
        t = base.pop(item) if pop else base[item]
        return self._float(t) if pop else t.to(self.device, torch.float32, copy=True)

    def statistics(self, unit: list[Item]) -> dict[str, list[dict[Item, torch.Tensor | None]]]:
        out: dict[str, list[dict[Item, torch.Tensor | None]]] = {}
        items = [it for it in unit if it.name in self.merged]
        for kind in self.reads.statistics:
            out[kind] = []
            for ck in self.plan.statistics[kind]:
                want, mapping = [], {}
                for item in items:
                    info = ck.tensors.get(item.name)
                    if info is None:
                        mapping[item] = None
                        continue
                    same = info.shape == self.tensors[item.name].shape
                    key = item if same else Item(item.name, 0, info.shape[0] if info.shape else 1)
                    mapping[item] = key
                    want.append(key)
                vals = ck.read(dict.fromkeys(want))
                per = {}
                for item, key in mapping.items():
                    if key is None:
                        per[item] = None
                        continue
                    t = vals[key]
                    self._finite(t, ck.role, item.name)
                    per[item] = t.to(self.device, torch.float32)
                out[kind].append(per)
        return out


def _block(plan: Plan, item: Item, base: torch.Tensor, sources: list[torch.Tensor], w: torch.Tensor, raw: torch.Tensor) -> Block:
    shape = plan.base.checkpoint.tensors[item.name].shape
    rows = (item.start, item.stop) if shape else (0, 1)
    return Block(
        name=item.name, shape=shape, rows=rows, base=base, sources=sources, weights=w, raw_weights=raw,
        seed=plan.seed, source_keys=plan.source_keys,
    )


SAMPLE_EVERY = 256  # the global threshold's sample: the first 1/256 of the rows of every block


def _sample_items(unit: list[Item], merged: set[str]) -> list[Item]:
    return [Item(it.name, it.start, it.start + max(1, -(-(it.stop - it.start) // SAMPLE_EVERY)))
            for it in unit if it.name in merged and it.stop > it.start]


def _weights(plan: Plan) -> tuple[torch.Tensor, torch.Tensor]:
    """The weights normalised to sum 1 and as given, float32 on the merge device."""
    raw = torch.tensor(plan.weights, dtype=torch.float32, device=plan.device)
    return raw / raw.sum(), raw.clone()


def _prepass(plan: Plan, units: list[list[Item]], nblocks: dict[str, int], reader: _Reader, bar) -> tuple[dict, dict, torch.Tensor | None]:
    """Per-tensor sums and exact thresholds that need a tensor's (or the model's) blocks together.

    Global thresholds: a sample pass (1/256 of the rows) brackets each source's r-th largest |τ|, then one full pass
    makes it exact (SampledSelect); should a bracket miss, two radix passes (RadixSelect) follow. The full pass also
    checks every source block for NaN/inf, so the merge pass need not check them again.
    """
    reads, tensors = plan.reads, plan.base.checkpoint.tensors
    k = len(plan.sources)
    merged = set(plan.merged)
    split = {n for n in plan.merged if nblocks[n] > 1}
    thresholds = reads.thresholds
    global_ranks: list[int] = []
    tensor_ranks: dict[str, list[int]] = {}
    if thresholds is not None and thresholds.scope == "global":
        global_ranks = thresholds.ranks(sum(tensors[n].numel for n in plan.merged))
    elif thresholds is not None:
        tensor_ranks = {n: r for n in split if (r := thresholds.ranks(tensors[n].numel))}
    # the split tensors that need per-tensor sums (a method may ask for them on some tensors only)
    sum_split = {n for n in split if reads.sums is not None and reads.sums.applies(n, tensors[n].shape)}
    sums: dict[str, dict[str, torch.Tensor]] = {}
    if not (global_ranks or tensor_ranks or sum_split):
        return sums, {}, None
    w, raw = _weights(plan)
    wanted = merged if global_ranks else (set(tensor_ranks) | sum_split)
    todo = [u for u in units if any(it.name in wanted for it in u)]
    late_sums = bool(sum_split) and reads.sums.after_thresholds  # sums that read the thresholds: a pass after them
    found: dict[str, Any] = {}  # the thresholds, once known (for late sums)

    def stream(select, label: str, sums_too: bool = False, sample: bool = False) -> None:
        nonlocal todo
        if select is None:  # a sums-only pass reads only the tensors that need sums
            todo = [u for u in todo if any(it.name in sum_split for it in u)]
        bar.reset(total=len(todo))
        bar.set_description(label)
        for unit in todo:
            items = [it for it in unit if it.name in wanted]
            if sample:
                items = _sample_items(items, merged)
            base = reader.base(items)
            blocks: dict[Item, list[torch.Tensor]] = {it: [] for it in items} if sums_too else {}
            if select is None:
                items = [it for it in items if it.name in sum_split]
            for i, vals in reader.sources(items, base):
                for it in items:
                    group = i if global_ranks else (it.name, i)
                    if select is not None and (global_ranks or it.name in tensor_ranks):
                        (select.sample if sample else select.add)(group, vals[it])
                    if sums_too:
                        blocks[it].append(vals[it])
                del vals
            if sums_too:
                for it in items:
                    if it.name in sum_split:
                        b = _block(plan, it, reader.base_block(base, it), blocks[it], w, raw)
                        b.thresholds = found["global"] if "global" in found else found.get("tensor", {}).get(it.name)
                        for key, v in reads.sums.sums(b).items():
                            acc = sums.setdefault(it.name, {})
                            acc[key] = acc[key] + v if key in acc else v.clone()
            del blocks, base
            bar.update(1)

    global_thr = None
    tensor_thr: dict[str, torch.Tensor] = {}
    if global_ranks:
        totals = {i: sum(tensors[n].numel for n in plan.merged) for i in range(k)}
        sampled = SampledSelect({i: global_ranks for i in range(k)}, totals)
        stream(sampled, "pre-pass: sample", sample=True)
        sampled.freeze()
        stream(sampled, "pre-pass: thresholds", sums_too=bool(sum_split) and not late_sums)
        results = [sampled.result(i) for i in range(k)]
        del sampled
        if any(r is None for r in results):  # a bracket missed: fall back to the two-pass radix select
            radix = RadixSelect({i: global_ranks for i in range(k)})
            stream(radix, "pre-pass: radix 1/2")
            radix.next_pass()
            stream(radix, "pre-pass: radix 2/2")
            results = [radix.result(i) for i in range(k)]
        global_thr = torch.stack(results).to(plan.device)
        if not reads.carries_nonfinite:
            reader.sources_checked = True
        found["global"] = global_thr
    elif tensor_ranks:
        radix = RadixSelect({(n, i): r for n, r in tensor_ranks.items() for i in range(k)})
        stream(radix, "pre-pass 1/2", sums_too=bool(sum_split) and not late_sums)
        radix.next_pass()
        stream(radix, "pre-pass 2/2")
        tensor_thr = {n: torch.stack([radix.result((n, i)) for i in range(k)]).to(plan.device) for n in tensor_ranks}
        found["tensor"] = tensor_thr
    if sum_split and (late_sums or not (global_ranks or tensor_ranks)):
        stream(None, "pre-pass: sums", sums_too=True)
    return sums, tensor_thr, global_thr


def _out_dtype(plan: Plan, name: str) -> torch.dtype:
    info = plan.base.checkpoint.tensors[name]
    if not info.is_float or plan.dtype == "base":
        return info.torch_dtype
    return OUT_DTYPES[plan.dtype]


def _copy_side_files(base: Path, out: Path, dtype: str) -> None:
    for f in base.iterdir():
        if f.is_file() and f.name not in _SKIP_FILES and not f.name.endswith(_SKIP_SUFFIXES):
            shutil.copy2(f, out / f.name)
    cfg_path = out / "config.json"
    if dtype != "base" and cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text())
        for key in ("dtype", "torch_dtype"):
            if key in cfg:
                cfg[key] = dtype
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def _progress(enabled: bool, total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, unit="tensor", dynamic_ncols=True, leave=False)


def stream(plan: Plan, options: RunOptions = RunOptions()) -> Path:
    """Run a checked plan of a streamed method into ``plan.output`` (HF folder + manifest.json), atomically: a failure
    while streaming (e.g. NaN in a source) removes the half-written output."""
    with PeakMemory(plan.device) as probe:
        return _stream(plan, options, probe)


def _stream(plan: Plan, options: RunOptions, probe: PeakMemory) -> Path:
    t0 = time.perf_counter()
    _keep_freed_memory()
    method, kernel, reads = plan.method, plan.kernel, plan.reads
    tensors_info = plan.base.checkpoint.tensors
    units, nblocks = plan_units(plan, options.memory_mb)
    reader = _Reader(plan)
    w, raw = _weights(plan)
    scope = reads.thresholds.scope if reads.thresholds is not None else None
    merged_set = set(plan.merged)
    tensors = [(n, info.shape, _out_dtype(plan, n)) for n, info in tensors_info.items()]
    t_valid = time.perf_counter() - t0

    with atomic_dir(plan.output, overwrite=options.overwrite) as tmp, _progress(options.progress, len(tensors)) as bar:
        t1 = time.perf_counter()
        sums, tensor_thr, global_thr = _prepass(plan, units, nblocks, reader, bar)
        t_prepass = time.perf_counter() - t1
        bar.reset(total=len(tensors))
        bar.set_description(f"merge ({method.name})")
        writer = SafetensorsWriter(tmp, tensors, shard_bytes=int(options.shard_mb * 2**20))

        def load(unit: list[Item]):
            base = reader.base(unit)
            items = [it for it in unit if it.name in merged_set]
            blocks: dict[Item, list[torch.Tensor]] = {it: [] for it in items}
            stacked = reader.stacked(items)
            for _, vals in reader.sources(unit, base, stacked):
                for it in items:
                    blocks[it].append(vals[it])
                del vals
            if stacked is None:
                stacked = {it: torch.stack(blocks[it]) for it in items}
                blocks = {it: list(stacked[it].unbind(0)) for it in items}
            stats = reader.statistics(unit) if reads.statistics else {}
            return base, blocks, stacked, stats

        # the next unit is read (file reads and torch ops release the GIL) while this one is merged
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="merge-prefetch")
        try:
            pending = pool.submit(load, units[0])
            for j, unit in enumerate(units):
                base, blocks, stacked, stats = pending.result()
                pending = pool.submit(load, units[j + 1]) if j + 1 < len(units) else None
                for it in unit:
                    info = tensors_info[it.name]
                    if it.name not in merged_set:
                        writer.write(it.name, it.start, base.pop(it))
                    else:
                        b = _block(plan, it, reader.base_block(base, it, pop=True), blocks.pop(it), w, raw)
                        b.stacked = stacked.pop(it)
                        b.stats = {kind: [per[it] for per in lists] for kind, lists in stats.items()}
                        if scope == "global":
                            b.thresholds = global_thr
                        elif scope == "tensor":
                            if nblocks[it.name] > 1:
                                b.thresholds = tensor_thr.get(it.name)
                            else:
                                ranks = reads.thresholds.ranks(info.numel)
                                if ranks:
                                    b.thresholds = torch.stack([kth_largest_abs(s, ranks) for s in b.sources]).to(plan.device)
                        if reads.sums is not None and reads.sums.applies(it.name, info.shape):
                            # after the thresholds: sums may read them (Sums.after_thresholds)
                            b.sums = sums.get(it.name, {}) if nblocks[it.name] > 1 else reads.sums.sums(b)
                        result = method.fn(b, kernel)
                        if reads.carries_nonfinite:
                            reader.check_output(result, it)
                        writer.write(it.name, it.start, result)
                        del b, result
                    if it.stop >= (info.shape[0] if info.shape else 1):
                        bar.update(1)
                del blocks, base, stats, stacked
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            reader.close()
            writer.abort()
            raise
        pool.shutdown(wait=True)
        reader.close()
        writer.close()
        _copy_side_files(plan.base.path, tmp, plan.dtype)
        wall = time.perf_counter() - t0
        write_merged_manifest(
            tmp,
            **plan.manifest_fields(),
            device=str(plan.device),
            timings={"total_s": round(wall, 3), "setup_s": round(t_valid, 3), "prepass_s": round(t_prepass, 3)},
            memory=probe.stop().record(),
            blocks={"memory_mb": options.memory_mb, "units": len(units), "split_tensors": sum(1 for v in nblocks.values() if v > 1)},
        )
    return plan.output
