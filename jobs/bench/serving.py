"""``commer-pipeline bench --serving``: store lookups as a service makes them, at growing store sizes.

Each store is built (``jobs.bench.serving_store``: the job's layout and index code) and then
measured in a fresh child process (``python -m jobs.bench.serving SPEC_JSON``), so the
resident memory it reports is the opened store's alone. Latencies are given as wall time
and as the calling thread's CPU time: on a shared machine the wall time's tail is other
processes' scheduling, the CPU time is what a lookup costs.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: Small dims for the size sweep (disk stays small), and the real ones (SmolLM2-135M, k=16).
SMALL_DIMS = (4, 64)
REAL_DIMS = (16, 576)
SINGLE_LOOKUPS, BATCHES, BATCH = 2000, 300, 32


def _rss_mb() -> float:
    """Current resident memory of this process (not the peak), MiB."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _settled_rss_mb() -> float:
    """Resident memory once garbage and the Arrow pool's unused memory are returned (what stays held)."""
    import gc

    import pyarrow as pa

    gc.collect()
    pa.default_memory_pool().release_unused()
    return _rss_mb()


def time_calls(fn: Callable[[Any], Any], args: list[Any]) -> dict[str, float]:
    """p50/p99 of wall and thread-CPU milliseconds of ``fn(arg)`` over ``args``."""
    wall, cpu = [], []
    for arg in args:
        w, c = time.perf_counter(), time.thread_time()
        fn(arg)
        cpu.append(time.thread_time() - c)
        wall.append(time.perf_counter() - w)
    w50, w99 = np.percentile(np.array(wall) * 1e3, [50, 99])
    c50, c99 = np.percentile(np.array(cpu) * 1e3, [50, 99])
    return {"p50_ms": float(w50), "p99_ms": float(w99), "cpu_p50_ms": float(c50), "cpu_p99_ms": float(c99)}


def measure(root: str, users: int, seed: int = 0) -> dict[str, Any]:
    """Open time, memory and lookup latencies of the store at ``root`` (run in a fresh process)."""
    import tempfile

    from commer_core.store import open_store
    from jobs.bench.serving_store import build_store, user_id

    with tempfile.TemporaryDirectory() as tiny:  # imports, allocator pools, first-call set-up: out of the figure
        open_store(build_store(Path(tiny), 10, 2, 2)).get([user_id(1)])
    rss = _settled_rss_mb()
    began = time.perf_counter()
    store = open_store(root)
    first_open_ms = (time.perf_counter() - began) * 1e3
    resident = _settled_rss_mb() - rss
    opens = []
    for _ in range(3):
        began = time.perf_counter()
        open_store(root)
        opens.append((time.perf_counter() - began) * 1e3)
    rng = random.Random(seed)
    single = [[user_id(rng.randrange(users))] for _ in range(SINGLE_LOOKUPS)]
    batches = [[user_id(rng.randrange(users)) for _ in range(BATCH)] for _ in range(BATCHES)]
    missing = [[f"absent-{rng.randrange(10**9):09d}"] for _ in range(SINGLE_LOOKUPS)]
    store.get(single[0])  # imports and first-call set-up out of the figures
    out = {"open_ms": float(np.median(opens)), "first_open_ms": first_open_ms, "resident_mb": resident,
           "single": time_calls(store.get, single), "batch": time_calls(store.get, batches),
           "missing": time_calls(store.get, missing),
           "batch8": time_calls(store.get, [b[:8] for b in batches])}
    index = store.index
    out.update(index_bytes_per_user=index.nbytes / users, footer_bytes_per_user=index.footer_bytes / users,
               row_groups=index.row_groups)
    return out


def _child(spec: dict[str, Any], say: Callable[[str], None]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "jobs.bench.serving", json.dumps(spec)], capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parents[2], env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"serving bench {spec} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """``build``: write the store, return its build time and bytes; else measure it."""
    from jobs.bench.serving_store import build_store, store_bytes

    root = Path(spec["root"])
    if spec["action"] == "build":
        began = time.perf_counter()
        build_store(root, spec["users"], spec["k"], spec["d"], files=spec["files"], checkpoint=spec.get("checkpoint"),
                    dtype=spec.get("dtype", "float32"))
        return {"build_s": time.perf_counter() - began, "bytes": store_bytes(root)}
    return measure(str(root), spec["users"])


def bench_size(workdir: Path, users: int, k: int, d: int, files: int, say: Callable[[str], None],
               checkpoint: dict[str, Any] | None = None, dtype: str = "float32") -> dict[str, Any]:
    """Build one store, then measure it in a fresh process; the row of the report."""
    spec = {"root": str(workdir / f"store-{users}-{k}x{d}-{files}-{dtype}"), "users": users, "k": k, "d": d,
            "files": files, "checkpoint": checkpoint, "dtype": dtype}
    say(f"bench: serving: building a store of {users:,} users, k={k}, d={d}, {dtype}, {files} file(s) ...")
    built = _child({**spec, "action": "build"}, say)
    say(f"bench: serving: measuring it ({built['build_s']:.0f} s to build) ...")
    row = {**spec, **built, **_child({**spec, "action": "measure"}, say)}
    size = built["bytes"]
    row.update(bytes_per_user=(size["embeddings"] + size["index"]) / users,
               embedding_bytes_per_user=size["embeddings"] / users)
    return row


if __name__ == "__main__":
    print(json.dumps(child(json.loads(sys.argv[1]))))
