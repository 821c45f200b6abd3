"""Scaling runs for ``commer-pipeline bench --scaling``: the compress job at growing sizes.

Each run is a fresh child process (``python -m jobs.bench.scaling SPEC_JSON``) that
generates its corpus, runs the whole job in-process and prints one JSON line with its
time and its own peak RSS, so one size's memory cannot hide in another's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

WORDS = ("river", "morning", "coffee", "train", "garden", "match", "recipe", "concert", "storm", "novel",
         "budget", "mountain", "office", "festival", "museum", "bicycle", "harbour", "meeting", "puppy", "snow")


def synthetic_text(i: int) -> str:
    """A short, varied, deterministic tweet-like document (about 20-40 tokens)."""
    words = [WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(8 + i % 9)]
    return f"Note {i}: " + " ".join(words) + "."


def write_corpus(path: Path, n_docs: int, docs_per_user: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "user_id": [f"user-{i // docs_per_user:07d}" for i in range(n_docs)],
        "doc_id": [str(i) for i in range(n_docs)],
        "text": [synthetic_text(i) for i in range(n_docs)],
    })
    pq.write_table(table, path, row_group_size=10_000)


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one size in this process; returns seconds, docs/s and this process's peak RSS."""
    from jobs.bench.perf import peak_rss_mb
    from pipelines.compress import CompressParams, run_job
    from pipelines.user_buckets import auto_bucket_count

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.parquet"
        write_corpus(corpus, spec["docs"], spec["docs_per_user"])
        params = CompressParams(input=str(corpus), output=str(Path(tmp) / "store"), checkpoint=spec["checkpoint"],
                                batch_tokens=spec["batch_tokens"], max_batch_size=256, device="cpu",
                                progress_every=0)
        start = time.perf_counter()
        result = run_job(params, echo=lambda _m: None)
        seconds = time.perf_counter() - start
    return {**spec, "seconds": seconds, "docs_per_s": spec["docs"] / seconds, "peak_rss_mb": peak_rss_mb(),
            "users": result.counts["users"], "model_seconds": result.counts.get("inference_ms", 0) / 1000,
            "user_buckets": auto_bucket_count(spec["docs"], "DirectRunner")}


def run_sizes(checkpoint: str, sizes: list[int], docs_per_user: list[int], users_total: int, batch_tokens: int,
              say: Any) -> dict[str, Any]:
    """Documents at ``sizes`` (10 per user), then ``users_total`` documents split ``docs_per_user`` each."""
    specs = [{"docs": n, "docs_per_user": 10} for n in sizes]
    specs += [{"docs": users_total, "docs_per_user": k} for k in docs_per_user]
    rows = []
    for spec in specs:
        spec = {**spec, "checkpoint": checkpoint, "batch_tokens": batch_tokens}
        say(f"bench: scaling {spec['docs']} documents, {spec['docs_per_user']} per user ...")
        proc = subprocess.run([sys.executable, "-m", "jobs.bench.scaling", json.dumps(spec)], capture_output=True,
                              text=True, cwd=Path(__file__).resolve().parents[2])  # the folder holding `jobs`
        if proc.returncode != 0:
            raise RuntimeError(f"scaling run {spec} failed: {proc.stderr[-2000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    by_size = {r["docs"]: r for r in rows[: len(sizes)]}
    out: dict[str, Any] = {"checkpoint": checkpoint, "runs": rows}
    if 10_000 in by_size and 100_000 in by_size:
        out["rss_growth_10k_to_100k"] = by_size[100_000]["peak_rss_mb"] / by_size[10_000]["peak_rss_mb"] - 1
    return out


if __name__ == "__main__":
    print(json.dumps(child(json.loads(sys.argv[1]))))
