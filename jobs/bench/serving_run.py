"""The runs of ``bench --serving``: each store size, the real dims, S3 requests, and lookup's share of ``generate``."""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from jobs.bench import measure
from jobs.bench.serving import REAL_DIMS, SMALL_DIMS, bench_size
from jobs.bench.serving_format import format_table, real_prompts
from jobs.bench.serving_s3 import s3_requests

GENERATE_BATCH, GENERATE_TOKENS = 8, 16
FORMAT_DOCS = 64  # real prompts for the storage-format table


def default_checkpoint_identity() -> dict[str, Any]:
    """Fingerprint, base model and weights hash of the bundled checkpoint (a store for it must name them)."""
    from commer_core.checkpoint import fingerprint, read_config
    from commer_core.defaults import default_checkpoint_path

    path = default_checkpoint_path()
    config = read_config(path)
    return {"fingerprint": fingerprint(path), "base_model": config["compressor"]["base_model"],
            "base_model_sha256": config.get("base_model", {}).get("weights_sha256"), "path": str(path)}


def lookup_share(store_dir: str, checkpoint: str, users: int, say: Callable[[str], None]) -> dict[str, Any]:
    """Seconds of ``PersonalizedLM.generate`` for 8 users (16 new tokens), and of its look-up alone."""
    from commer_core.serving import PersonalizedLM, Request
    from jobs.bench.serving_store import user_id

    say(f"bench: serving: generate for {GENERATE_BATCH} users with the bundled model (CPU) ...")
    lm = PersonalizedLM.open(store_dir, checkpoint)
    rng = np.random.default_rng(0)
    batches = [[user_id(int(i)) for i in rng.integers(users, size=GENERATE_BATCH)] for _ in range(3)]
    lm.generate([Request(u, "Write a tweet about my weekend:") for u in batches[0]], batch_size=GENERATE_BATCH,
                max_new_tokens=2)  # warm-up
    generate, lookup = [], []
    for ids in batches:
        began = time.perf_counter()
        lm.generate([Request(u, "Write a tweet about my weekend:") for u in ids], batch_size=GENERATE_BATCH,
                    max_new_tokens=GENERATE_TOKENS)
        generate.append(time.perf_counter() - began)
        began = time.perf_counter()
        lm.prompts(ids)
        lookup.append(time.perf_counter() - began)
    return {"generate_s": float(np.median(generate)), "lookup_s": float(np.median(lookup)),
            "batch": GENERATE_BATCH, "new_tokens": GENERATE_TOKENS}


def run_serving(sizes: tuple[int, ...], real_users: int, files: int, say: Callable[[str], None],
                workdir: Path | None = None) -> dict[str, Any]:
    """The serving report: one row per store size (small dims), the real-dims row, S3 requests, generate."""
    temp = None if workdir is not None else tempfile.TemporaryDirectory(prefix="commer-serving-")
    work = workdir or Path(temp.name)
    import torch

    report: dict[str, Any] = {"kind": "serving", "machine": measure.machine_name(torch.device("cpu")),
                              "software": f"Python {platform.python_version()}, {_pyarrow()}", "rows": [],
                              "load_average": [os.getloadavg()[0]]}
    try:
        for users in sorted(sizes):
            report["rows"].append(bench_size(work, users, *SMALL_DIMS, files, say))
        smallest = report["rows"][0]
        report["s3"] = s3_requests(Path(smallest["root"]), smallest["users"], say)
        if real_users:
            report["format"] = format_table(real_prompts(FORMAT_DOCS, say))
            identity = default_checkpoint_identity()
            ckpt = {k: identity[k] for k in ("fingerprint", "base_model", "base_model_sha256")}
            real = bench_size(work, real_users, *REAL_DIMS, files, say, checkpoint=ckpt)
            report["real"] = real
            report["generate"] = lookup_share(real["root"], identity["path"], real_users, say)
            report["real_float16"] = bench_size(work, real_users, *REAL_DIMS, files, say, checkpoint=ckpt,
                                                dtype="float16")
    finally:
        if temp is not None:
            temp.cleanup()
    report["load_average"].append(os.getloadavg()[0])
    return report


def _pyarrow() -> str:
    import pyarrow

    return f"pyarrow {pyarrow.__version__}"
