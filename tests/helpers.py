"""Small builders shared by the core tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from commer_core.backbone import Backbone
from commer_core.compressor import Compressor
from commer_core.config import CompressorConfig, LoraSettings


def make_compressor(backbone: Backbone, *, k: int = 4, r: int = 4, perturb_lora: bool = True, seed: int = 0) -> Compressor:
    """A compressor whose LoRA actually changes the backbone (PEFT starts with B = 0)."""
    config = CompressorConfig(base_model=backbone.name, num_embeddings=k, lora=LoraSettings(r=r, dropout=0.0))
    compressor = Compressor(backbone, config, seed=seed)
    if perturb_lora:
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, param in compressor.peft_model.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
    return compressor


DOCS = [
    "The cat sat on the mat and looked out of the window.",
    "Rome was not built in a day; its roads, aqueducts and laws took centuries.",
    "ok",
    "I went hiking in the Alps last summer with my sister and we saw ibex near the glacier.",
    "Quarterly revenue rose by four percent.",
]


# -- corpora and command lines for the compress job ------------------------------------------
MAX_DOC_TOKENS = 16


def write_corpus(directory, rows, n_files: int = 2) -> str:
    """``rows`` (user_id, doc_id, text dicts) round-robin into ``n_files`` Parquet files; returns the pattern."""
    os.makedirs(directory, exist_ok=True)
    schema = pa.schema([("user_id", pa.string()), ("doc_id", pa.string()), ("text", pa.string())])
    for i in range(n_files):
        pq.write_table(pa.Table.from_pylist(rows[i::n_files], schema=schema), os.path.join(directory, f"part-{i}.parquet"))
    return os.path.join(directory, "*.parquet")


def job_args(corpus: str, output, checkpoint, *extra: str) -> list[str]:
    """The compress job's argv for a small, fast run."""
    return [
        "--input", corpus, "--output", str(output), "--checkpoint", str(checkpoint),
        "--max-doc-tokens", str(MAX_DOC_TOKENS), "--batch-tokens", "96", "--progress-every", "0", *extra,
    ]


def run_job(corpus: str, output, checkpoint, *extra: str):
    """The compress job, in process on a Beam TestPipeline, with :func:`job_args`; its CompressResult."""
    from apache_beam.testing.test_pipeline import TestPipeline

    from pipelines.compress import run

    return run(job_args(corpus, output, checkpoint, *extra), test_pipeline=TestPipeline())


def write_corrupt_parquet(path) -> None:
    """A Parquet file whose footer (schema) is valid but whose data pages are garbage."""
    rows = [{"user_id": f"u{i}", "doc_id": "d", "text": f"some text {i}" * 5} for i in range(50)]
    pq.write_table(pa.Table.from_pylist(rows), path, compression="zstd")
    column = pq.ParquetFile(path).metadata.row_group(0).column(2)
    start = column.dictionary_page_offset if column.has_dictionary_page else column.data_page_offset
    data = bytearray(open(path, "rb").read())
    data[start + 8 : start + column.total_compressed_size - 2] = b"Z" * (column.total_compressed_size - 10)
    with open(path, "wb") as fh:
        fh.write(bytes(data))


def run_script(name: str, *args: object) -> subprocess.CompletedProcess:
    """Run ``scripts/<name>`` in a subprocess from the repository root (importable whether or not installed)."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, str(root / "scripts" / name), *map(str, args)], capture_output=True,
                          text=True, cwd=root, env=env)
