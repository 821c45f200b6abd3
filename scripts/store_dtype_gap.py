"""Does a float16 store change personalization? Issue 8's gap from the same prompts stored in float32 and float16.

Runs the product path of ``commer-pipeline personalization-check`` once (documents ->
``compress`` -> float32 store), rewrites that store's rows in float16 with the job's own
writer and index, and scores every example with each store through ``PersonalizedLM``:
own prompt, a deranged other user's, none. Besides each store's gap it reports the paired
per-example difference of the own-prompt loss (nats per target token), which isolates the
storage precision from the examples' noise.

    python scripts/store_dtype_gap.py --data tests/fixtures/handwritten_lamp7 --output runs/store-dtype
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from commer_core.personalization import per_token  # noqa: E402
from commer_core.serving import PersonalizedLM  # noqa: E402
from commer_core.store import embedding_matrix, open_store  # noqa: E402
from jobs import personalization_cmd as pc  # noqa: E402
from jobs.bench.serving_store import commit_version  # noqa: E402
from pipelines.store_tables import ToStoreTables, store_writer_options  # noqa: E402
from schemas import store_schema  # noqa: E402


def float16_copy(store_dir: Path, target: Path) -> Path:
    """The committed store at ``store_dir`` rewritten with float16 embeddings (same rows, job's layout)."""
    store = open_store(store_dir)
    table = store.dataset().to_table()
    k, d = store.num_embeddings, store.hidden_size
    means = embedding_matrix(table.column("embedding"), k, d)
    rows = sorted((u, (means[i], n)) for i, (u, n) in enumerate(zip(table.column("user_id").to_pylist(),
                                                                      table.column("n_docs").to_pylist())))
    writer = ToStoreTables(k, d, store.checkpoint_fingerprint, table.column("computed_at")[0].as_py(), 64, "float16")
    version = target / "v-float16"
    version.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(version / "embeddings-00000-of-00001.parquet", store_schema(k, d, "float16"),
                          **store_writer_options()) as sink:
        for chunk in writer.process((0, rows)):
            sink.write_table(chunk)
    commit_version(version, dataclasses.replace(store.manifest, index=None))
    return target


def own_losses(store: Path, checkpoint: Path, examples: list, batch_size: int) -> np.ndarray:
    lm = PersonalizedLM.open(store, checkpoint)
    users = sorted({e.user_id for e in examples})
    return per_token(pc.score_with_partners(lm, examples, {u: u for u in users}, batch_size=batch_size))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="dev")
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--docs-per-user", type=int, default=0)
    parser.add_argument("--max-examples", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args(argv)
    ckpt, examples, prepared = pc._inputs(a.data, a.split, None, a.checkpoint, a.docs_per_user, "bm25", a.seed,
                                          a.max_examples, 256, 64)
    store32 = pc.compress_users(pc.user_documents(examples, prepared, a.docs_per_user == 0), a.output, ckpt,
                                device="cpu", overwrite=True)
    store16 = float16_copy(store32, a.output / "store-float16")
    report = {"data": str(a.data), "split": a.split, "checkpoint": str(ckpt), "docs_per_user": a.docs_per_user}
    for name, store in (("float32", store32), ("float16", store16)):
        report[name] = pc._score_store(store, ckpt, prepared, device="cpu", seed=a.seed, batch_size=a.batch_size,
                                       progress=False)
    kept = [e for e in prepared if e.user_id in set(open_store(store32).users())]
    diff = own_losses(store16, ckpt, kept, a.batch_size) - own_losses(store32, ckpt, kept, a.batch_size)
    report["own_loss_float16_minus_float32"] = {"mean": float(diff.mean()), "max_abs": float(np.abs(diff).max()),
                                                "examples": len(diff)}
    report["bytes"] = {name: sum(p.stat().st_size for p in Path(store).rglob("embeddings-*.parquet"))
                       for name, store in (("float32", store32), ("float16", store16))}
    (a.output / "store_dtype_gap.json").write_text(json.dumps(report, indent=2) + "\n")
    gaps = {n: report[n]["gap"] for n in ("float32", "float16")}
    print(" | ".join(f"{n}: gap {g['gap']:+.4f} [{g['low']:+.4f}, {g['high']:+.4f}] own better {g['own_better']:.0%}"
                     for n, g in gaps.items()) + f" | own loss fp16 - fp32: mean {diff.mean():+.2e}, max abs "
          f"{np.abs(diff).max():.2e} nats/token over {len(diff)} examples")
    return report


if __name__ == "__main__":
    main()
