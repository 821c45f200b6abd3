"""Write a staged version's lookup index (``schemas.store_index``), the commit's step before the manifest.

Why here and not in the graph: which row group of which shard holds a user is known only
once Beam's sinks have written and renamed the shards. :func:`write_index` reads each
staged embeddings file's footer and ``user_id`` column (not the embeddings), sorts every id
once, and writes ``_INDEX.parquet`` and ``_INDEX_FILES.parquet`` into the version; the
manifest written next lists them, so the index is committed with the version or not at all.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from commer_core.parquet_footer import FooterError, SplitFooter, row_group_footer, split_footer
from commer_core.store import EMBEDDINGS_GLOB
from commer_core.store_index import READ_COLUMNS
from pipelines.commit import CommitError
from pipelines.store_tables import EMBEDDING_LEAF
from pipelines.versions import match_files
from schemas import (
    INDEX_FILES_NAME,
    INDEX_FILES_SCHEMA,
    INDEX_USERS_NAME,
    INDEX_USERS_SCHEMA,
    StoreIndexInfo,
    StoreManifest,
)

_LEAVES = [EMBEDDING_LEAF if c == "embedding" else c for c in READ_COLUMNS]
_MAX_ROWS = 2**32  # rows are uint32


def _chunk_span(column: pq.ColumnChunkMetaData) -> tuple[int, int]:
    start = column.data_page_offset
    if column.has_dictionary_page and 0 < column.dictionary_page_offset < start:
        start = column.dictionary_page_offset
    return start, start + column.total_compressed_size


def _read_tail(fh, path: str) -> tuple[int, bytes]:
    """The file's size and its last bytes: footer, footer length, ``PAR1``."""
    size = fh.seek(0, 2)
    fh.seek(size - 8)
    trailer = fh.read(8)
    if size < 12 or trailer[4:] != b"PAR1":
        raise CommitError(f"{path} is not a Parquet file; cannot index the store")
    length = int.from_bytes(trailer[:4], "little") + 8
    fh.seek(size - length)
    return size, fh.read(length)


def file_entry(path: str, name: str) -> tuple[dict, pa.Array]:
    """One files-table row (see ``INDEX_FILES_SCHEMA``) and the file's user ids in row order."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        size, footer = _read_tail(fh, path)
        metadata = pq.read_metadata(pa.BufferReader(footer))
        ids = pq.ParquetFile(fh, metadata=metadata).read(columns=["user_id"]).column("user_id")
    leaves = [metadata.schema.column(j).path for j in range(metadata.num_columns)]
    missing = [leaf for leaf in _LEAVES if leaf not in leaves]
    if missing:
        raise CommitError(f"{path} has no column {missing[0]}; cannot index the store")
    rows, offsets, lengths = [], [], []
    for g in range(metadata.num_row_groups):
        group = metadata.row_group(g)
        spans = [_chunk_span(group.column(leaves.index(leaf))) for leaf in _LEAVES]
        start, end = min(s for s, _ in spans), max(e for _, e in spans)
        rows.append(group.num_rows)
        offsets.append(start)
        lengths.append(end - start)
    parts = _split(footer, metadata, path, leaves.index(_LEAVES[0]))
    entry = {"name": name, "size": size, "footer_head": parts.head, "footer_middle": parts.middle,
             "footer_tail": parts.tail, "row_group_footers": parts.row_groups, "row_group_rows": rows,
             "read_offset": offsets, "read_length": lengths}
    return entry, ids.combine_chunks()


def _split(footer: bytes, metadata: pq.FileMetaData, path: str, leaf: int) -> SplitFooter:
    """The footer cut per row group, checked: the last row group spliced back reads as the original."""
    try:
        parts = split_footer(footer[:-8])
        if not parts.row_groups:
            return parts
        last = metadata.num_row_groups - 1
        rows = metadata.row_group(last).num_rows
        alone = pq.read_metadata(pa.BufferReader(row_group_footer(parts.head, parts.middle, parts.tail,
                                                                  parts.row_groups[-1:], rows)))
    except (FooterError, OSError, pa.ArrowException) as exc:
        raise CommitError(f"{path}: cannot cut its footer per row group ({exc}); cannot index the store") from exc
    if alone.row_group(0).column(leaf).data_page_offset != metadata.row_group(last).column(leaf).data_page_offset:
        raise CommitError(f"{path}: its footer cut per row group does not read back; cannot index the store")
    return parts


def build_index(version_root: str) -> tuple[pa.Table, pa.Table]:
    """The (users, files) tables of the embeddings files staged under ``version_root``.

    Raises :class:`CommitError` when a user appears in two rows (the store would be ambiguous).
    """
    paths = sorted(match_files(FileSystems.join(version_root, EMBEDDINGS_GLOB)))
    entries, ids = [], []
    for path in paths:
        entry, file_ids = file_entry(path, path.rstrip("/").rsplit("/", 1)[-1])
        entries.append(entry)
        ids.append(file_ids)
    all_ids = pa.chunked_array(ids, pa.string()).combine_chunks() if ids else pa.array([], pa.string())
    if len(all_ids) >= _MAX_ROWS:
        raise CommitError(f"{version_root}: {len(all_ids)} users; the lookup index holds at most {_MAX_ROWS - 1}")
    order = pc.sort_indices(all_ids)
    sorted_ids = all_ids.take(order)
    if len(sorted_ids) > 1:
        same = pc.equal(sorted_ids.slice(1), sorted_ids.slice(0, len(sorted_ids) - 1))
        if pc.any(same).as_py():
            twice = sorted_ids[int(np.flatnonzero(same.to_numpy(zero_copy_only=False))[0])].as_py()
            raise CommitError(f"{version_root}: user {twice!r} is in more than one row; cannot index the store")
    users = pa.Table.from_arrays([sorted_ids, pa.array(order.to_numpy().astype(np.uint32))], schema=INDEX_USERS_SCHEMA)
    files = pa.Table.from_pylist(entries, schema=INDEX_FILES_SCHEMA)
    return users, files


def write_index(version_root: str, manifest: StoreManifest) -> tuple[StoreManifest, list[str]]:
    """Write the index into the staged version; the manifest to commit (listing it) and the files written."""
    users, files = build_index(version_root)
    written = []
    for name, table in ((INDEX_USERS_NAME, users), (INDEX_FILES_NAME, files)):
        path = FileSystems.join(version_root, name)
        with FileSystems.create(path) as fh:
            pq.write_table(table, fh, compression="zstd")
        written.append(path)
    info = StoreIndexInfo(users_file=INDEX_USERS_NAME, files_file=INDEX_FILES_NAME, users=users.num_rows,
                          files=files.num_rows)
    return dataclasses.replace(manifest, index=info), written
