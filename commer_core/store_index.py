"""Serve lookups from a version's index (``schemas.store_index``): users located in memory, one read per row group.

Why: a service answers each request batch with ``get(user_ids)``. Scanning row-group
statistics costs time linear in the store's users (110 ms at 1M users); this module holds
the sorted ids (about 24 bytes per user for 16-character ids), finds a user by binary
search, answers an unknown user without any I/O, and reads exactly one byte range per
row group it needs, decoded by pyarrow with the footer entries the index carries (no
request to an embedding file's footer, so a single-user ``get`` is one ranged read on an
object store). Footers stay serialized, cut per row group (``commer_core.parquet_footer``):
parsed whole they would take ~6 KB of memory per row group, 92 bytes per user at 1M users.
"""

from __future__ import annotations

import array
import bisect
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from commer_core.parquet_footer import row_group_footer
from commer_core.store import StoreError
from schemas import INDEX_FILES_SCHEMA, INDEX_USERS_SCHEMA, StoreIndexInfo

#: The columns a lookup reads (each costs ~0.1 ms of decoding per row group, so not ``user_id``).
READ_COLUMNS = ["embedding", "n_docs"]


def fsspec_of(fs: pafs.FileSystem) -> Any:
    """The fsspec filesystem a pyarrow ``PyFileSystem(FSSpecHandler(...))`` wraps, else None (a native one)."""
    return getattr(getattr(fs, "handler", None), "fs", None)


def read_object(fs: pafs.FileSystem, path: str, offset: int | None = None, length: int | None = None) -> bytes:
    """A whole file, or ``length`` bytes at ``offset``: one request where the filesystem allows it.

    An fsspec filesystem (wrapped by pyarrow) reads a range with one ranged GET; opening it as
    a file first would cost a HEAD as well.
    """
    fsspec_fs = fsspec_of(fs)
    if fsspec_fs is not None:
        if offset is None:  # a range from 0: without one s3fs asks for the size first (a HEAD)
            return fsspec_fs.cat_file(path, start=0)
        return fsspec_fs.cat_file(path, start=offset, end=offset + length)
    if offset is None:
        with fs.open_input_stream(path) as fh:
            return fh.read()
    with fs.open_input_file(path) as fh:
        return fh.read_at(length, offset)


def read_ranges(fs: pafs.FileSystem, path: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
    """The ``(offset, length)`` ranges of one file: one ranged read each (fsspec: issued concurrently)."""
    fsspec_fs = fsspec_of(fs)
    if fsspec_fs is not None:
        return fsspec_fs.cat_ranges([path] * len(ranges), [o for o, _ in ranges], [o + n for o, n in ranges])
    with fs.open_input_file(path) as fh:
        return [fh.read_at(n, o) for o, n in ranges]


class _SortedIds(Sequence):
    """The sorted user ids, indexable for :mod:`bisect`: views of the Arrow array's own buffers (no copy)."""

    def __init__(self, ids: pa.Array) -> None:
        _, offsets, data = ids.buffers()
        width = np.int64 if pa.types.is_large_string(ids.type) else np.int32
        self._offsets = np.frombuffer(offsets, dtype=width)[ids.offset : ids.offset + len(ids) + 1]
        self._data = memoryview(data) if data is not None else memoryview(b"")
        self._ids = ids  # owns the buffers
        self._n = len(ids)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> bytes:  # type: ignore[override]
        return bytes(self._data[self._offsets[i] : self._offsets[i + 1]])

    def find(self, user_id: str) -> int:
        """The position of ``user_id``, or -1."""
        key = user_id.encode("utf-8")
        i = bisect.bisect_left(self, key)
        return i if i < self._n and self[i] == key else -1

    def to_arrow(self) -> pa.Array:
        return self._ids

    @property
    def nbytes(self) -> int:
        return int(self._offsets[-1] - self._offsets[0]) + self._offsets.nbytes if self._n else 0


class _Window(io.RawIOBase):
    """A file of ``size`` bytes of which only some ranges were fetched; pyarrow reads through it."""

    def __init__(self, ranges: Sequence[tuple[int, bytes]], size: int, name: str) -> None:
        super().__init__()
        self._starts = [start for start, _ in ranges]
        self._data = [data for _, data in ranges]
        self._size, self._pos, self._name = size, 0, name

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        self._pos = pos if whence == io.SEEK_SET else (self._pos + pos if whence == io.SEEK_CUR else self._size + pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, n: int = -1) -> bytes:
        i = bisect.bisect_right(self._starts, self._pos) - 1
        begin = self._pos - self._starts[i] if i >= 0 else -1
        if n < 0 or begin < 0 or begin + n > len(self._data[i]):
            raise OSError(f"{self._name}: a read at {self._pos} (+{n}) falls outside the row groups the index names")
        self._pos += n
        return self._data[i][begin : begin + n]


class StoreIndex:
    """A version's lookup index, in memory: sorted ids -> rows -> (file, row group, byte range)."""

    def __init__(self, root: str, users: pa.Table, files: pa.Table) -> None:
        self.root = root
        self._ids = _SortedIds(users.column("user_id").combine_chunks())
        self._rows = users.column("row").combine_chunks().to_numpy()  # uint32, zero-copy
        self.file_names: list[str] = files.column("name").to_pylist()
        self._sizes: list[int] = files.column("size").to_pylist()
        self._footer_parts = list(zip(*(files.column(c).to_pylist()
                                         for c in ("footer_head", "footer_middle", "footer_tail")))) or []
        self._rg_footers = pa.chunked_array(
            [c.flatten() for c in files.column("row_group_footers").chunks], pa.binary()).combine_chunks()
        per_file = files.column("row_group_rows").to_pylist()
        self._rg_file = np.repeat(np.arange(len(per_file), dtype=np.int32), [len(r) for r in per_file])
        self._rg_in_file = np.concatenate([np.arange(len(r), dtype=np.int32) for r in per_file]) if per_file else \
            np.zeros(0, np.int32)
        starts = np.concatenate([[0], np.cumsum(np.concatenate(per_file) if per_file else [], dtype=np.int64)])
        self._rg_start = array.array("q", starts.astype(np.int64).tobytes())  # bisect on it: Python ints are fast
        self._offset = np.concatenate(files.column("read_offset").to_pylist() or [[]]).astype(np.int64)
        self._length = np.concatenate(files.column("read_length").to_pylist() or [[]]).astype(np.int64)
        if len(self._rows) and int(self._rows.max()) >= self._rg_start[-1]:
            raise StoreError(f"{root}: the index names row {int(self._rows.max())}, past the "
                             f"{self._rg_start[-1]} rows of its files")

    @classmethod
    def load(cls, fs: pafs.FileSystem, root: str, info: StoreIndexInfo) -> StoreIndex:
        """Read the two index files named by the manifest (one whole-object read each)."""
        tables = []
        for name, schema in ((info.users_file, INDEX_USERS_SCHEMA), (info.files_file, INDEX_FILES_SCHEMA)):
            try:
                table = pq.read_table(pa.BufferReader(read_object(fs, f"{root}/{name}")))
            except (OSError, pa.ArrowException) as exc:
                raise StoreError(f"{root}: cannot read the lookup index {name}: {exc}") from exc
            if not table.schema.equals(schema):
                raise StoreError(f"{root}/{name} is not a lookup index (schema {table.schema.names})")
            tables.append(table)
        users, files = tables
        if (users.num_rows, files.num_rows) != (info.users, info.files):
            raise StoreError(f"{root}: the lookup index holds {users.num_rows} users in {files.num_rows} files, "
                             f"the manifest says {info.users} in {info.files}")
        return cls(root, users, files)

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def nbytes(self) -> int:
        """Bytes held per user lookup: ids, their offsets, rows and the row-group tables (footers apart)."""
        arrays = (self._rows, self._rg_file, self._rg_in_file, self._offset, self._length)
        return self._ids.nbytes + sum(a.nbytes for a in arrays) + self._rg_start.itemsize * len(self._rg_start)

    @property
    def footer_bytes(self) -> int:
        """Bytes of the embedding files' footers the index holds (serialized: only what a read parses is parsed)."""
        return self._rg_footers.nbytes + sum(len(b) for parts in self._footer_parts for b in parts)

    @property
    def row_groups(self) -> int:
        return len(self._rg_file)

    def users(self) -> pa.Array:
        return self._ids.to_arrow()

    def arrow_schema(self) -> pa.Schema:
        """The embedding files' schema (from the first file's footer; with no row group, an empty store, none is spliced in)."""
        return self._metadata(0, [0] if self.row_groups else []).schema.to_arrow_schema()

    def _metadata(self, f: int, groups: list[int]) -> pq.FileMetaData:
        """The footer of file ``f`` holding only ``groups`` (global row-group numbers), in that order."""
        rows = sum(self._rg_start[g + 1] - self._rg_start[g] for g in groups)
        entries = [self._rg_footers[g].as_py() for g in groups]
        return pq.read_metadata(pa.BufferReader(row_group_footer(*self._footer_parts[f], entries, rows)))

    def locate(self, user_ids: Sequence[str]) -> dict[str, int]:
        """``{user_id: row}`` for the ids present; absent ids cost no I/O."""
        found = {}
        for user in user_ids:
            i = self._ids.find(user)
            if i >= 0:
                found[user] = int(self._rows[i])
        return found

    def read(self, fs: pafs.FileSystem, user_ids: Sequence[str]) -> dict[str, tuple[np.ndarray, int]]:
        """``{user_id: (flat embedding values, n_docs)}`` of the ids present: per file, one read of the
        row groups they fall in (one byte range each)."""
        by_group: dict[int, list[tuple[str, int]]] = {}
        for user, row in self.locate(user_ids).items():
            g = bisect.bisect_right(self._rg_start, row) - 1
            by_group.setdefault(g, []).append((user, row - self._rg_start[g]))
        by_file: dict[int, list[int]] = {}
        for g in sorted(by_group):
            by_file.setdefault(int(self._rg_file[g]), []).append(g)
        found = {}
        for f, groups in by_file.items():
            table = self._read_row_groups(fs, f, groups)
            column = table.column("embedding").combine_chunks()
            values = column.values.to_numpy(zero_copy_only=False).reshape(len(column), -1)
            n_docs = table.column("n_docs").to_numpy()
            base = 0
            for g in groups:
                for user, local in by_group[g]:
                    found[user] = (values[base + local], int(n_docs[base + local]))
                base += self._rg_start[g + 1] - self._rg_start[g]
        return found

    def _read_row_groups(self, fs: pafs.FileSystem, f: int, groups: list[int]) -> pa.Table:
        path = f"{self.root}/{self.file_names[f]}"
        ranges = [(int(self._offset[g]), int(self._length[g])) for g in groups]
        try:
            fetched = read_ranges(fs, path, ranges)
            window = pa.PythonFile(_Window([(o, d) for (o, _), d in zip(ranges, fetched)], self._sizes[f], path),
                                   mode="r")
            reader = pq.ParquetFile(window, metadata=self._metadata(f, groups), pre_buffer=False)
            return reader.read_row_groups(list(range(len(groups))), columns=READ_COLUMNS, use_threads=False)
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(f"cannot read {path} (row groups {[int(self._rg_in_file[g]) for g in groups]}): "
                             f"{exc}") from exc
