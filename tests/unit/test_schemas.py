"""Schemas: field presence and types, documented fields, validation messages, manifest round trip."""

from __future__ import annotations

import ast
import json
import unicodedata
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import (
    CORPUS_SCHEMA,
    DEAD_LETTER_SCHEMA,
    MANIFEST_FIELDS,
    SchemaError,
    StoreManifest,
    check_row,
    dead_letter_row,
    field_doc,
    normalize_row,
    store_schema,
    validate_corpus_schema,
)

UTC = pa.timestamp("us", tz="UTC")


def _types(schema: pa.Schema) -> dict[str, pa.DataType]:
    return {f.name: f.type for f in schema}


@pytest.mark.parametrize("schema", [CORPUS_SCHEMA, DEAD_LETTER_SCHEMA, store_schema(4, 8)])
def test_every_field_is_documented(schema: pa.Schema) -> None:
    assert all(field_doc(f) for f in schema), [f.name for f in schema if not field_doc(f)]


def test_corpus_schema_fields() -> None:
    assert _types(CORPUS_SCHEMA) == {
        "user_id": pa.string(),
        "doc_id": pa.string(),
        "text": pa.string(),
        "timestamp": UTC,
    }
    assert [f.nullable for f in CORPUS_SCHEMA] == [False, False, False, True]


def test_store_schema_fields_and_shape() -> None:
    schema = store_schema(4, 8)
    types = _types(schema)
    assert types["embedding"] == pa.list_(pa.field("item", pa.float32(), nullable=False), 32)
    assert types["user_id"] == pa.string()
    assert types["num_embeddings"] == types["hidden_size"] == pa.int32()
    assert types["n_docs"] == pa.int64()
    assert types["checkpoint_fingerprint"] == pa.string()
    assert types["computed_at"] == UTC
    row = {
        "user_id": "u",
        "embedding": [0.5] * 32,
        "num_embeddings": 4,
        "hidden_size": 8,
        "n_docs": 3,
        "checkpoint_fingerprint": "abc",
        "computed_at": datetime(2025, 1, 1, tzinfo=timezone.utc),
    }
    assert pa.Table.from_pylist([row], schema=schema).num_rows == 1
    with pytest.raises((pa.ArrowInvalid, ValueError)):
        pa.Table.from_pylist([{**row, "embedding": [0.5] * 31}], schema=schema)


@pytest.mark.parametrize("k,d", [(0, 8), (4, 0), (-1, 8), (True, 8), (2.0, 8)])
def test_store_schema_rejects_bad_shape(k: object, d: object) -> None:
    with pytest.raises(ValueError):
        store_schema(k, d)  # type: ignore[arg-type]


def test_dead_letter_schema_fields() -> None:
    assert _types(DEAD_LETTER_SCHEMA) == {n: pa.string() for n in ("user_id", "doc_id", "text", "reason", "stage", "source")}
    assert {f.name for f in DEAD_LETTER_SCHEMA if f.nullable} == {"user_id", "doc_id", "text", "source"}


def test_dead_letter_row_stringifies_and_is_writable() -> None:
    letter = dead_letter_row({"user_id": 7, "doc_id": None, "text": "bad \udcff"}, "text contains invalid UTF-8 / control characters", "validate", "a.parquet")
    assert letter["user_id"] == "7" and letter["doc_id"] is None and letter["source"] == "a.parquet"
    assert pa.Table.from_pylist([letter], schema=DEAD_LETTER_SCHEMA).num_rows == 1
    assert dead_letter_row(42, "row is not a mapping (got int)", "validate")["text"] == "42"


# --- file-level validation ---------------------------------------------------------------

def test_validate_accepts_corpus_and_variants() -> None:
    validate_corpus_schema(CORPUS_SCHEMA, source="ok.parquet")
    variant = pa.schema([("uid", pa.large_string()), ("id", pa.int64()), ("body", pa.dictionary(pa.int32(), pa.string()))])
    validate_corpus_schema(variant, source="v.parquet", user_column="uid", doc_id_column="id", text_column="body")


def test_validate_names_file_and_missing_column() -> None:
    schema = pa.schema([("user_id", pa.string()), ("doc_id", pa.string())])
    with pytest.raises(SchemaError, match=r"users-0001\.parquet.*missing column 'text'") as info:
        validate_corpus_schema(schema, source="users-0001.parquet")
    assert isinstance(info.value, ValueError) and info.value.source == "users-0001.parquet"


def test_validate_names_mistyped_columns() -> None:
    schema = pa.schema([("user_id", pa.int64()), ("doc_id", pa.float64()), ("text", pa.binary()), ("timestamp", pa.string())])
    with pytest.raises(SchemaError) as info:
        validate_corpus_schema(schema, source="x.parquet")
    message = str(info.value)
    assert "x.parquet" in message
    for column in ("'user_id' has type int64", "'doc_id' has type double", "'text' has type binary", "'timestamp' has type string"):
        assert column in message


def test_validate_custom_text_column_named() -> None:
    with pytest.raises(SchemaError, match="missing column 'body'"):
        validate_corpus_schema(CORPUS_SCHEMA, source="f", text_column="body")


# --- row-level validation ----------------------------------------------------------------

@pytest.mark.parametrize(
    "row,reason",
    [
        ({"user_id": None, "doc_id": "d", "text": "t"}, "user_id is null or empty"),
        ({"user_id": " ", "doc_id": "d", "text": "t"}, "user_id is null or empty"),
        ({"user_id": "u", "doc_id": "d", "text": "  \n"}, "text is empty or whitespace"),
        ({"user_id": "u", "doc_id": "d", "text": 5}, "text is not a string (got int)"),
        ({"user_id": "u", "doc_id": "d", "text": "a\x00b"}, "text contains invalid UTF-8 / control characters"),
        ({"user_id": "u", "doc_id": "d", "text": "a\udc80"}, "text contains invalid UTF-8 / control characters"),
        ({"user_id": "u", "doc_id": True, "text": "t"}, "doc_id is not a string or integer (got bool)"),
        ({"user_id": "u", "text": "t"}, "doc_id is null or empty"),
        ({"user_id": "u", "doc_id": 3, "text": "t", "timestamp": 12}, "timestamp is not a datetime or ISO 8601 string (got int)"),
        ({"user_id": "u", "doc_id": 3, "text": "t", "timestamp": datetime.min.replace(tzinfo=timezone(timedelta(hours=5)))}, "timestamp is out of range"),
    ],
)
def test_check_row_reasons(row: dict, reason: str) -> None:
    assert check_row(row) == reason


def test_normalize_row() -> None:
    out = normalize_row({"user_id": "u", "doc_id": 3, "text": "hi\tthere", "timestamp": "2021-05-01", "extra": 1})
    assert out == {"user_id": "u", "doc_id": "3", "text": "hi\tthere", "timestamp": datetime(2021, 5, 1, tzinfo=timezone.utc)}
    assert normalize_row({"uid": "u", "id": "d", "body": "x"}, user_column="uid", doc_id_column="id", text_column="body")["doc_id"] == "d"
    with pytest.raises(ValueError, match="text is empty"):
        normalize_row({"user_id": "u", "doc_id": "d", "text": ""})


def _valid_string(value: object) -> bool:
    """Test oracle, written independently of schemas.validation."""
    if not isinstance(value, str) or value.strip() == "":
        return False
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        return False
    return not any(unicodedata.category(c) == "Cc" and c not in "\t\n\r" for c in value)


def _oracle(row: dict) -> bool:
    doc_id = row.get("doc_id")
    doc_ok = (type(doc_id) is int) or _valid_string(doc_id)
    ts = row.get("timestamp")
    ts_ok = ts is None or isinstance(ts, (datetime, date))
    if isinstance(ts, str):
        try:
            ts = datetime.fromisoformat(ts)
            ts_ok = True
        except ValueError:
            ts_ok = False
    if isinstance(ts, datetime) and ts.tzinfo is not None:
        try:
            ts.astimezone(timezone.utc)
        except OverflowError:  # e.g. datetime.min at UTC+5 has no UTC value
            ts_ok = False
    return _valid_string(row.get("user_id")) and doc_ok and _valid_string(row.get("text")) and ts_ok


_values = st.one_of(
    st.none(),
    st.text(max_size=12),
    st.text(alphabet=st.characters(categories=["Cs", "Cc", "Zs", "Lu"]), max_size=6),
    st.integers(),
    st.booleans(),
    st.floats(allow_nan=True),
    st.binary(max_size=4),
    st.lists(st.integers(), max_size=2),
    st.datetimes(timezones=st.one_of(st.none(), st.just(timezone.utc), st.just(timezone(timedelta(hours=5))))),
    st.dates(),
    st.sampled_from(["2021-02-03", "2021-02-03T04:05:06+00:00", "yesterday", "\x00", "\udcff", " "]),
)
_rows = st.dictionaries(st.sampled_from(["user_id", "doc_id", "text", "timestamp", "other"]), _values)


@settings(max_examples=400, deadline=None)
@given(_rows)
def test_check_row_property(row: dict) -> None:
    reason = check_row(row)
    assert (reason is None) == _oracle(row), (row, reason)
    if reason is None:
        table = pa.Table.from_pylist([normalize_row(row)], schema=CORPUS_SCHEMA)
        assert table.column("doc_id")[0].as_py() == str(row["doc_id"])
    else:
        assert isinstance(reason, str) and reason
        letter = dead_letter_row(row, reason, "validate")
        assert pa.Table.from_pylist([letter], schema=DEAD_LETTER_SCHEMA).num_rows == 1


@given(st.one_of(st.none(), st.integers(), st.text(), st.lists(st.text())))
def test_check_row_non_mapping_never_raises(value: object) -> None:
    assert check_row(value) == f"row is not a mapping (got {type(value).__name__})"  # type: ignore[arg-type]


# --- manifest ----------------------------------------------------------------------------

def _manifest(**overrides: object) -> StoreManifest:
    fields = dict(
        checkpoint_fingerprint="sha256:abc",
        base_model="smollm2-135m",
        base_model_sha256=None,
        num_embeddings=8,
        hidden_size=576,
        counts={"users": 2, "documents": 10, "dead_letters": 0},
        input_pattern="gs://b/corpus-*.parquet",
        runner="DirectRunner",
        started_at=datetime(2025, 1, 1, 1, tzinfo=timezone.utc),
        finished_at=datetime(2025, 1, 1, 2, tzinfo=timezone.utc),
        package_version="0.1.0",
    )
    fields.update(overrides)
    return StoreManifest(**fields)  # type: ignore[arg-type]


def test_manifest_round_trip() -> None:
    manifest = _manifest()
    text = manifest.to_json()
    assert json.loads(text)["format_version"] == 1
    assert StoreManifest.from_json(text) == manifest
    assert set(MANIFEST_FIELDS) == set(json.loads(text)) and all(MANIFEST_FIELDS.values())


@pytest.mark.parametrize("name", ["checkpoint_fingerprint", "hidden_size", "counts", "started_at", "runner"])
def test_manifest_missing_field_is_named(name: str) -> None:
    data = json.loads(_manifest().to_json())
    del data[name]
    with pytest.raises(ValueError, match=f"'{name}' is missing"):
        StoreManifest.from_json(json.dumps(data))


@pytest.mark.parametrize(
    "name,value",
    [
        ("hidden_size", "576"),
        ("num_embeddings", 0),
        ("counts", {"users": -1}),
        ("counts", [1]),
        ("started_at", "not a time"),
        ("finished_at", "2025-01-01T03:00:00"),
        ("format_version", 2),
        ("base_model", ""),
    ],
)
def test_manifest_malformed_field_is_named(name: str, value: object) -> None:
    data = json.loads(_manifest().to_json())
    data[name] = value
    with pytest.raises(ValueError, match=name):
        StoreManifest.from_json(json.dumps(data))


def test_manifest_rejects_non_object_and_bad_json() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        StoreManifest.from_json("[]")
    with pytest.raises(ValueError, match="not valid JSON"):
        StoreManifest.from_json("{")


def test_schemas_import_only_pyarrow() -> None:
    forbidden = {"torch", "apache_beam", "transformers", "click", "commer_core", "numpy"}
    for path in (Path(__file__).resolve().parents[2] / "schemas").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not {n.split(".")[0] for n in names} & forbidden, (path.name, names)


def test_every_code_point_is_judged_as_the_unicode_oracle_judges_it() -> None:
    """The one-regex character check agrees with unicodedata on all 1.1M code points."""
    from schemas.validation import _has_invalid_characters

    wrong = [cp for cp in range(0x110000)
             if _has_invalid_characters(f"a{chr(cp)}b") == _valid_string(f"a{chr(cp)}b")]
    assert wrong == []
