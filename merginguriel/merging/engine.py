"""The one merge core: validate, plan blocks, run the method's pre-passes, merge block by block, write atomically.

Memory: a unit of blocks is read for the base and then for each source in turn (one file open at a time, closed after
the unit), while the previous unit is merged, so the working set is about 2K + 6 blocks; the block size is the memory
budget divided by that, which keeps peak memory flat as K grows. The merged weights go straight to disk (writer.SafetensorsWriter).
"""

from __future__ import annotations

import dataclasses
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
from merginguriel.merging.dare_mask import apply_dare, keep_mask
from merginguriel.merging.manifest import write_merged_manifest
from merginguriel.merging.registry import Block
from merginguriel.merging.spec import MergeSpec
from merginguriel.merging.threshold import RadixSelect, SampledSelect, kth_largest_abs
from merginguriel.merging.validate import OUT_DTYPES, Plan, prepare
from merginguriel.merging.writer import SafetensorsWriter

Item = tuple[str, int, int]  # tensor name, first row, end row
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


def plan_units(plan: Plan) -> tuple[list[list[Item]], dict[str, int]]:
    """Split tensors into row blocks no larger than the budget and group small ones; also count blocks per tensor."""
    k = len(plan.sources)
    # two units are in flight (one merged, the next read ahead): 2 x (K sources + base) + method temporaries
    block_elems = max(1, min(int(plan.spec.memory_mb * 2**20 / 4 / (2 * k + 6)), _MAX_BLOCK_ELEMS))
    units: list[list[Item]] = [[]]
    used = 0
    nblocks: dict[str, int] = {}
    order = sorted(plan.base.tensors.values(), key=lambda t: (str(t.file), t.offset))
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
            units[-1].append((info.name, a, b))
            used += size
    return [u for u in units if u], nblocks


class _Reader:
    """Reads units of blocks for the base, the sources (as models or task vectors, DARE applied) and statistics."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.merged = set(plan.merged)
        self.device = plan.device
        p = plan.params
        self.dare = (float(p.p), bool(p.rescale)) if plan.method.dare else None
        self.sources_checked = False  # set once a pre-pass has checked every merged source block for NaN/inf
        self.mask_keys = mask_keys(plan)
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
        items = unit if self.plan.method.uses_base else [it for it in unit if it[0] not in self.merged]
        vals = self.plan.base.read(items)
        for item, t in vals.items():
            if not (self.sources_checked and item[0] in self.merged):  # a pre-pass read and checked it already
                self._finite(t, f"base {self.plan.base.folder}", item[0])
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
            if it[0] in self.merged:
                shape = self.plan.base.tensors[it[0]].shape
                out[it] = torch.empty((k, it[2] - it[1], *shape[1:]) if shape else (k,), dtype=torch.float32)
        return out

    def sources(
        self, unit: list[Item], base: dict[Item, torch.Tensor], stacked: dict[Item, torch.Tensor] | None = None
    ) -> Iterator[tuple[int, dict[Item, torch.Tensor]]]:
        items = [it for it in unit if it[0] in self.merged]
        task_vectors = self.plan.method.inputs == "task_vectors"
        futures = None
        if stacked is not None:
            # reading is a memory copy out of the page cache that releases the GIL: two readers use both cores
            futures = [
                self._read_pool.submit(ck.read, items, {it: stacked[it][i] for it in items})
                for i, ck in enumerate(self.plan.sources)
            ]
        for i, ck in enumerate(self.plan.sources):
            vals = futures[i].result() if futures is not None else ck.read(items)
            out = {}
            for item in items:
                t = vals.pop(item)
                if not (self.plan.method.propagates_nonfinite or self.sources_checked):
                    self._finite(t, f"source {ck.folder}", item[0])
                t = self._float(t)
                if task_vectors:
                    t.sub_(base[item].to(self.device, torch.float32))
                    if self.dare is not None:
                        info = self.plan.base.tensors[item[0]]
                        mask = keep_mask(self.plan.spec.seed, self.mask_keys[i], item[0], info.shape, item[1:], self.dare[0])
                        apply_dare(t, mask, *self.dare)
                out[item] = t
            del vals
            yield i, out

    def check_output(self, result: torch.Tensor, item: Item) -> None:
        """For methods whose output carries any NaN/inf of their inputs: check the output, and name the source if not finite."""
        try:
            self._finite(result, "merged", item[0])
        except InputError:
            for ck in self.plan.sources:
                self._finite(ck.read([item])[item], f"source {ck.folder}", item[0])
            raise InputError(
                f"the merged values of tensor {item[0]} overflowed (inf) although every source is finite; "
                "check the weights and the method's scaling (lam)"
            ) from None

    def base_block(self, base: dict[Item, torch.Tensor], item: Item, pop: bool = False) -> torch.Tensor | None:
        if not self.plan.method.uses_base:
            return None
        t = base.pop(item) if pop else base[item]
        return self._float(t) if pop else t.to(self.device, torch.float32, copy=True)

    def statistics(self, unit: list[Item]) -> dict[str, list[dict[Item, torch.Tensor | None]]]:
        out: dict[str, list[dict[Item, torch.Tensor | None]]] = {}
        items = [it for it in unit if it[0] in self.merged]
        for kind, cks in self.plan.statistics.items():
            out[kind] = []
            for ck in cks:
                want, mapping = [], {}
                for item in items:
                    info = ck.tensors.get(item[0])
                    if info is None:
                        mapping[item] = None
                        continue
                    same = info.shape == self.plan.base.tensors[item[0]].shape
                    rows = item[1:] if same else (0, info.shape[0] if info.shape else 1)
                    mapping[item] = (item[0], *rows)
                    want.append((item[0], *rows))
                vals = ck.read(dict.fromkeys(want))
                per = {}
                for item, key in mapping.items():
                    if key is None:
                        per[item] = None
                        continue
                    t = vals[key]
                    self._finite(t, ck.role, item[0])
                    per[item] = t.to(self.device, torch.float32)
                out[kind].append(per)
        return out


def mask_keys(plan: Plan) -> list[str]:
    """Per source, the key its random streams (DARE's mask) are seeded by: the hash of its weights that validation
    records, so a renamed or moved folder gives the same mask and two folders of one name in different places
    (different weights) get different ones."""
    return [str(r["hash"]) for r in plan.records]


def _block(plan: Plan, item: Item, base: torch.Tensor, sources: list[torch.Tensor], w: torch.Tensor, raw: torch.Tensor) -> Block:
    info = plan.base.tensors[item[0]]
    rows = (item[1], item[2]) if info.shape else (0, 1)
    return Block(
        name=item[0], shape=info.shape, rows=rows, base=base, sources=sources, weights=w, raw_weights=raw,
        seed=plan.spec.seed, source_keys=mask_keys(plan),
    )


SAMPLE_EVERY = 256  # the global threshold's sample: the first 1/256 of the rows of every block


def _sample_items(unit: list[Item], merged: set[str]) -> list[Item]:
    return [(n, a, a + max(1, -(-(b - a) // SAMPLE_EVERY))) for n, a, b in unit if n in merged and b > a]


def _prepass(plan: Plan, units: list[list[Item]], nblocks: dict[str, int], reader: _Reader, bar) -> tuple[dict, dict, torch.Tensor | None]:
    """Per-tensor sums and exact thresholds that need a tensor's (or the model's) blocks together.

    Global thresholds: a sample pass (1/256 of the rows) brackets each source's r-th largest |τ|, then one full pass
    makes it exact (SampledSelect); should a bracket miss, two radix passes (RadixSelect) follow. The full pass also
    checks every source block for NaN/inf, so the merge pass need not check them again.
    """
    method, params = plan.method, plan.params
    k = len(plan.sources)
    merged = set(plan.merged)
    split = {n for n in plan.merged if nblocks[n] > 1}
    sums: dict[str, dict[str, torch.Tensor]] = {}
    scope = method.rank_scope(params) if method.ranks and method.rank_scope else None
    global_ranks: list[int] = []
    tensor_ranks: dict[str, list[int]] = {}
    if scope == "global":
        total = sum(plan.base.tensors[n].numel for n in plan.merged)
        global_ranks = method.ranks(params, total)
    elif scope == "tensor":
        tensor_ranks = {n: method.ranks(params, plan.base.tensors[n].numel) for n in split}
        tensor_ranks = {n: r for n, r in tensor_ranks.items() if r}
    # the split tensors that need per-tensor sums (a method may ask for them on some tensors only)
    sum_split = {n for n in split if method.sums_for is None or method.sums_for(params, n, plan.base.tensors[n].shape)}
    want_sums = method.tensor_sums is not None and bool(sum_split)
    if not (global_ranks or tensor_ranks or want_sums):
        return sums, {}, None
    w = torch.tensor(plan.weights, dtype=torch.float32, device=plan.device)
    raw = w.clone()
    w = w / w.sum()
    wanted = merged if global_ranks else (set(tensor_ranks) | (sum_split if want_sums else set()))
    todo = [u for u in units if any(it[0] in wanted for it in u)]
    late_sums = want_sums and method.sums_after_thresholds  # sums that read the thresholds: one more pass after them
    found: dict[str, Any] = {}  # the thresholds, once known (for late sums)

    def stream(select, label: str, sums_too: bool = False, sample: bool = False) -> None:
        nonlocal todo
        if select is None:  # a sums-only pass reads only the tensors that need sums
            todo = [u for u in todo if any(it[0] in sum_split for it in u)]
        bar.reset(total=len(todo))
        bar.set_description(label)
        for unit in todo:
            items = [it for it in unit if it[0] in wanted]
            if sample:
                items = _sample_items(items, merged)
            base = reader.base(items)
            blocks: dict[Item, list[torch.Tensor]] = {it: [] for it in items} if sums_too else {}
            if select is None:
                items = [it for it in items if it[0] in sum_split]
            for i, vals in reader.sources(items, base):
                for it in items:
                    group = i if global_ranks else (it[0], i)
                    if select is not None and (global_ranks or it[0] in tensor_ranks):
                        (select.sample if sample else select.add)(group, vals[it])
                    if sums_too:
                        blocks[it].append(vals[it])
                del vals
            if sums_too:
                for it in items:
                    if it[0] in sum_split:
                        b = _block(plan, it, reader.base_block(base, it), blocks[it], w, raw)
                        b.thresholds = found["global"] if "global" in found else found.get("tensor", {}).get(it[0])
                        for key, v in method.tensor_sums(b, params).items():
                            acc = sums.setdefault(it[0], {})
                            acc[key] = acc[key] + v if key in acc else v.clone()
            del blocks, base
            bar.update(1)

    global_thr = None
    tensor_thr: dict[str, torch.Tensor] = {}
    if global_ranks:
        totals = {i: sum(plan.base.tensors[n].numel for n in plan.merged) for i in range(k)}
        sampled = SampledSelect({i: global_ranks for i in range(k)}, totals)
        stream(sampled, "pre-pass: sample", sample=True)
        sampled.freeze()
        stream(sampled, "pre-pass: thresholds", sums_too=want_sums and not late_sums)
        results = [sampled.result(i) for i in range(k)]
        del sampled
        if any(r is None for r in results):  # a bracket missed: fall back to the two-pass radix select
            radix = RadixSelect({i: global_ranks for i in range(k)})
            stream(radix, "pre-pass: radix 1/2")
            radix.next_pass()
            stream(radix, "pre-pass: radix 2/2")
            results = [radix.result(i) for i in range(k)]
        global_thr = torch.stack(results).to(plan.device)
        if not method.propagates_nonfinite:
            reader.sources_checked = True
        found["global"] = global_thr
    elif tensor_ranks:
        radix = RadixSelect({(n, i): r for n, r in tensor_ranks.items() for i in range(k)})
        stream(radix, "pre-pass 1/2", sums_too=want_sums and not late_sums)
        radix.next_pass()
        stream(radix, "pre-pass 2/2")
        tensor_thr = {n: torch.stack([radix.result((n, i)) for i in range(k)]).to(plan.device) for n in tensor_ranks}
        found["tensor"] = tensor_thr
    if want_sums and (late_sums or not (global_ranks or tensor_ranks)):
        stream(None, "pre-pass: sums", sums_too=True)
    return sums, tensor_thr, global_thr


def _out_dtype(plan: Plan, name: str) -> torch.dtype:
    info = plan.base.tensors[name]
    if not info.is_float or plan.spec.dtype == "base":
        return info.torch_dtype
    return OUT_DTYPES[plan.spec.dtype]


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


def merge(spec: MergeSpec) -> Path:
    """Merge ``spec.sources`` into ``spec.output`` (HF folder + manifest.json), validating every input first.

    Nothing is written unless every check passes; a failure while streaming (e.g. NaN in a source) removes the
    half-written output.
    """
    from merginguriel.memory import PeakMemory

    t0 = time.perf_counter()
    probe = PeakMemory(spec.device if spec.device != "auto" else None).__enter__()
    plan = prepare(spec)
    _keep_freed_memory()
    method, params = plan.method, plan.params
    units, nblocks = plan_units(plan)
    reader = _Reader(plan)
    w = torch.tensor(plan.weights, dtype=torch.float32, device=plan.device)
    raw = w.clone()
    w = w / w.sum()
    scope = method.rank_scope(params) if method.ranks and method.rank_scope else None
    merged_set = set(plan.merged)
    tensors = [(n, info.shape, _out_dtype(plan, n)) for n, info in plan.base.tensors.items()]
    t_valid = time.perf_counter() - t0

    with atomic_dir(spec.output, overwrite=spec.overwrite) as tmp, _progress(spec.progress, len(tensors)) as bar:
        t1 = time.perf_counter()
        sums, tensor_thr, global_thr = _prepass(plan, units, nblocks, reader, bar)
        t_prepass = time.perf_counter() - t1
        bar.reset(total=len(tensors))
        bar.set_description(f"merge ({method.name})")
        writer = SafetensorsWriter(tmp, tensors, shard_bytes=int(spec.shard_mb * 2**20))
        def load(unit: list[Item]):
            base = reader.base(unit)
            items = [it for it in unit if it[0] in merged_set]
            blocks: dict[Item, list[torch.Tensor]] = {it: [] for it in items}
            stacked = reader.stacked(items)
            for _, vals in reader.sources(unit, base, stacked):
                for it in items:
                    blocks[it].append(vals[it])
                del vals
            if stacked is None:
                stacked = {it: torch.stack(blocks[it]) for it in items}
                blocks = {it: list(stacked[it].unbind(0)) for it in items}
            stats = reader.statistics(unit) if plan.statistics else {}
            return base, blocks, stacked, stats

        # the next unit is read (file reads and torch ops release the GIL) while this one is merged
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="merge-prefetch")
        try:
            pending = pool.submit(load, units[0])
            for j, unit in enumerate(units):
                base, blocks, stacked, stats = pending.result()
                pending = pool.submit(load, units[j + 1]) if j + 1 < len(units) else None
                for it in unit:
                    name = it[0]
                    if name not in merged_set:
                        writer.write(name, it[1], base.pop(it))
                    else:
                        b = _block(plan, it, reader.base_block(base, it, pop=True), blocks.pop(it), w, raw)
                        b.stacked = stacked.pop(it)
                        b.stats = {kind: [per[it] for per in lists] for kind, lists in stats.items()}
                        if scope == "global":
                            b.thresholds = global_thr
                        elif scope == "tensor":
                            if nblocks[name] > 1:
                                b.thresholds = tensor_thr.get(name)
                            else:
                                ranks = method.ranks(params, plan.base.tensors[name].numel)
                                if ranks:
                                    b.thresholds = torch.stack([kth_largest_abs(s, ranks) for s in b.sources]).to(plan.device)
                        if method.tensor_sums is not None and (
                            method.sums_for is None or method.sums_for(params, name, plan.base.tensors[name].shape)
                        ):  # after the thresholds: sums may read them (sums_after_thresholds)
                            b.sums = sums.get(name, {}) if nblocks[name] > 1 else method.tensor_sums(b, params)
                        result = method.fn(b, params)
                        if method.propagates_nonfinite:
                            reader.check_output(result, it)
                        writer.write(name, it[1], result)
                        del b, result
                    last = plan.base.tensors[name].shape[0] if plan.base.tensors[name].shape else 1
                    if it[2] >= last:
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
        _copy_side_files(spec.base, tmp, spec.dtype)
        wall = time.perf_counter() - t0
        write_merged_manifest(
            tmp,
            method=method.name,
            params=dataclasses.asdict(params),
            base={"path": str(spec.base), "hash": plan.base_hash},
            sources=plan.records,
            weights_normalised=w.tolist(),
            seed=spec.seed,
            target=spec.target,
            include_target=spec.include_target,
            selection=spec.selection,
            exclude={"patterns": spec.exclude, "tensors": plan.excluded},
            statistics={kind: [str(c.folder) for c in cks] for kind, cks in plan.statistics.items()},
            dtype=spec.dtype,
            device=str(plan.device),
            timings={"total_s": round(wall, 3), "validate_s": round(t_valid, 3), "prepass_s": round(t_prepass, 3)},
            memory=probe.stop().record(),
            job=spec.job,
            blocks={"memory_mb": spec.memory_mb, "units": len(units), "split_tensors": sum(1 for v in nblocks.values() if v > 1)},
        )
    return spec.output
