"""A Parquet footer cut into one footer per row group, so a reader parses (and holds) only what it reads.

Why: pyarrow parses a whole footer into C++ objects of about 6 KB per row group (92 MB for
a 1M-user store with 64 users per row group, against 8 MB serialized), and a lookup needs
only the one row group it reads. The footer is a Thrift compact-protocol ``FileMetaData``;
:func:`split_footer` finds the byte span of its ``num_rows`` (field 3) and of each element
of ``row_groups`` (field 4) and keeps everything else verbatim, and :func:`row_group_footer`
splices one row group back in: a valid footer of a file that has only that row group, at
the same absolute offsets, which ``pq.ParquetFile(..., metadata=...)`` reads.
"""

from __future__ import annotations

from dataclasses import dataclass

_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(13)
_NUM_ROWS, _ROW_GROUPS = 3, 4
_MAGIC = b"PAR1"


class FooterError(ValueError):
    """The bytes are not a Parquet footer this module understands."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise FooterError("truncated varint in the Parquet footer")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _skip(buf: bytes, pos: int, kind: int) -> int:
    """The position after one value of compact type ``kind`` starting at ``pos``."""
    if kind in (_TRUE, _FALSE):
        return pos
    if kind == _BYTE:
        return pos + 1
    if kind in (_I16, _I32, _I64):
        return _varint(buf, pos)[1]
    if kind == _DOUBLE:
        return pos + 8
    if kind == _BINARY:
        length, pos = _varint(buf, pos)
        return pos + length
    if kind in (_LIST, _SET):
        size, element, pos = _list_header(buf, pos)
        for _ in range(size):
            pos = pos + 1 if element in (_TRUE, _FALSE) else _skip(buf, pos, element)
        return pos
    if kind == _MAP:
        size, pos = _varint(buf, pos)
        if size:
            types, pos = buf[pos], pos + 1
            for _ in range(size):
                pos = _skip(buf, _skip(buf, pos, types >> 4), types & 0x0F)
        return pos
    if kind == _STRUCT:
        for _, _, _, end in _fields(buf, pos):
            pos = end
        return pos + 1  # the STOP byte
    raise FooterError(f"unknown Thrift compact type {kind} in the Parquet footer")


def _list_header(buf: bytes, pos: int) -> tuple[int, int, int]:
    header, pos = buf[pos], pos + 1
    size = header >> 4
    if size == 15:
        size, pos = _varint(buf, pos)
    return size, header & 0x0F, pos


def _fields(buf: bytes, pos: int, last: int = 0):
    """``(field id, type, value start, value end)`` of each field of the struct at ``pos`` (up to its STOP);
    ``last``: the id of the field before ``pos`` when reading from the middle of a struct."""
    while True:
        if pos >= len(buf):
            raise FooterError("truncated struct in the Parquet footer")
        header, pos = buf[pos], pos + 1
        if header == _STOP:
            return
        kind, delta = header & 0x0F, header >> 4
        if delta:
            last += delta
        else:
            raw, pos = _varint(buf, pos)
            last = (raw >> 1) ^ -(raw & 1)
        end = _skip(buf, pos, kind)
        yield last, kind, pos, end
        pos = end


@dataclass(frozen=True)
class SplitFooter:
    """A footer without its row groups (``head`` + num_rows + ``middle`` + row groups + ``tail``) and each row group."""

    head: bytes
    middle: bytes
    tail: bytes
    row_groups: list[bytes]


def split_footer(footer: bytes) -> SplitFooter:
    """Cut a serialized ``FileMetaData`` (the footer alone, no length or magic) around num_rows and row_groups."""
    try:
        return _split(footer)
    except IndexError:
        raise FooterError("truncated Parquet footer") from None


def _split(footer: bytes) -> SplitFooter:
    spans = {fid: (kind, start, end) for fid, kind, start, end in _fields(footer, 0)}
    if spans.get(_NUM_ROWS, (None,))[0] != _I64 or spans.get(_ROW_GROUPS, (None,))[0] != _LIST:
        raise FooterError("the footer has no num_rows / row_groups fields where Parquet puts them")
    _, rows_start, rows_end = spans[_NUM_ROWS]
    _, groups_start, groups_end = spans[_ROW_GROUPS]
    if not rows_end <= groups_start:
        raise FooterError("the footer's row_groups come before num_rows")
    size, element, pos = _list_header(footer, groups_start)
    if element != _STRUCT:
        raise FooterError("the footer's row_groups are not structs")
    groups = []
    for _ in range(size):
        end = _skip(footer, pos, _STRUCT)
        groups.append(footer[pos:end])
        pos = end
    if pos != groups_end:
        raise FooterError("the footer's row_groups do not end where the list does")
    return SplitFooter(footer[:rows_start], footer[rows_end:groups_start], footer[groups_end:], groups)


def row_group_footer(head: bytes, middle: bytes, tail: bytes, row_groups: list[bytes], rows: int) -> bytes:
    """The tail of a Parquet file (footer, its length, ``PAR1``) whose row groups are ``row_groups`` (``rows`` in all)."""
    n = len(row_groups)
    header = bytes([(n << 4) | _STRUCT]) if n < 15 else bytes([0xF0 | _STRUCT]) + _encode_varint(n)
    footer = b"".join((head, _encode_varint((rows << 1) ^ (rows >> 63)), middle, header, *row_groups, tail))
    return footer + len(footer).to_bytes(4, "little") + _MAGIC
