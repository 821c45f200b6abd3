"""The compress job commits a lookup index with every version; services read and refresh through it."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from click.testing import CliRunner

from commer_core.serving import PersonalizedLM
from commer_core.store import open_store
from jobs.cli import cli
from schemas import INDEX_FILES_NAME, INDEX_USERS_NAME
from tests.helpers import DOCS


def _corpus(path, users: int) -> None:
    rows = [{"user_id": f"u{u:03d}", "doc_id": f"d{u}-{i}", "text": DOCS[(u + i) % len(DOCS)]}
            for u in range(users) for i in range(2)]
    pq.write_table(pa.Table.from_pylist(rows), path)


def _compress(*args: str) -> None:
    result = CliRunner().invoke(cli, ["compress", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output


def test_each_committed_version_carries_an_index_that_serves_and_refreshes(tiny_checkpoint, tmp_path):
    _corpus(tmp_path / "a.parquet", 30)
    store_dir = tmp_path / "store"
    _compress("--input", str(tmp_path / "a.parquet"), "--output", str(store_dir), "--checkpoint",
              str(tiny_checkpoint), "--user-buckets", "2")
    store = open_store(store_dir)
    assert store.manifest.index is not None and store.manifest.index.users == 30 == len(store)
    assert store.manifest.index.files == len(store.embedding_files) >= 2  # one file per user bucket at least
    assert {p.name for p in (store_dir / store.version).iterdir()} >= {INDEX_USERS_NAME, INDEX_FILES_NAME}

    scanned = store.dataset().to_table(columns=["user_id", "embedding", "n_docs"])
    wanted = ["u000", "u017", "u029", "nobody"]
    got = store.get(wanted)
    assert set(got) == set(wanted[:3])
    for user, (emb, n_docs) in got.items():
        row = scanned.filter(pc.equal(scanned.column("user_id"), user))
        np.testing.assert_array_equal(emb.reshape(-1), np.asarray(row.column("embedding")[0].as_py(), np.float32))
        assert n_docs == row.column("n_docs")[0].as_py() == 2

    lm = PersonalizedLM.open(store_dir, tiny_checkpoint)
    assert lm.refresh() is False
    _corpus(tmp_path / "b.parquet", 31)
    _compress("--input", str(tmp_path / "b.parquet"), "--output", str(store_dir), "--checkpoint",
              str(tiny_checkpoint), "--overwrite", "--store-dtype", "float16")
    assert lm.refresh() is True and lm.store.version != store.version
    assert lm.store.index.arrow_schema().field("embedding").type.value_type == pa.float16()
    prompts = lm.prompts(["u030", "u000"])
    assert set(prompts) == {"u030", "u000"} and len(lm.store) == 31 and prompts["u000"].dtype == torch.float32
    np.testing.assert_allclose(prompts["u000"].numpy(), got["u000"][0], rtol=2e-3, atol=1e-3)  # same documents
