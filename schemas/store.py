"""The embedding store: one row per user holding the merged ``k x d`` soft prompt.

Why: downstream readers look a user up and feed the soft prompt to the frozen
backbone; they must be able to tell, without the model, which compressor produced
the rows (``checkpoint_fingerprint``) and reshape the flat vector (``num_embeddings``
x ``hidden_size``). The :class:`StoreManifest` is written last, as the commit marker
of a complete store, and records how it was built.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa

from schemas.corpus import TIMESTAMP_TYPE, doc_field
from schemas.store_index import StoreIndexInfo

#: Highest manifest format this code reads and the one it writes.
MANIFEST_FORMAT_VERSION = 1


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int (got {value!r})")
    return value


#: Value types a store's embedding may be written in: float32 (the default), or float16 (opt-in,
#: half the size; its effect on the personalization gap is in docs/PERFORMANCE.md, "Serving").
STORE_DTYPES = {"float32": pa.float32(), "float16": pa.float16()}


def store_schema(k: int, d: int, dtype: str = "float32") -> pa.Schema:
    """Arrow schema of store rows for ``k`` compression embeddings of hidden size ``d``.

    The embedding is a flat ``fixed_size_list<dtype>[k*d]`` (row-major ``k x d``) so
    that each row is one contiguous buffer and a wrong shape fails at write time.
    """
    _check_positive_int("k (num_embeddings)", k)
    _check_positive_int("d (hidden_size)", d)
    if dtype not in STORE_DTYPES:
        raise ValueError(f"store dtype must be one of {sorted(STORE_DTYPES)} (got {dtype!r})")
    return pa.schema(
        [
            doc_field("user_id", pa.string(), "The user whose documents were merged.", nullable=False),
            doc_field(
                "embedding",
                pa.list_(pa.field("item", STORE_DTYPES[dtype], nullable=False), k * d),
                f"Mean of the user's document compressions, row-major k x d, {dtype}.",
                nullable=False,
            ),
            doc_field("num_embeddings", pa.int32(), "k: number of soft-prompt vectors.", nullable=False),
            doc_field("hidden_size", pa.int32(), "d: the backbone's hidden size.", nullable=False),
            doc_field(
                "n_docs",
                pa.int64(),
                "Number of documents averaged; lets a new document fold into the mean in O(1).",
                nullable=False,
            ),
            doc_field(
                "checkpoint_fingerprint",
                pa.string(),
                "Fingerprint of the compressor checkpoint that produced the embedding.",
                nullable=False,
            ),
            doc_field("computed_at", TIMESTAMP_TYPE, "When this row was computed (UTC).", nullable=False),
        ],
        metadata={
            "doc": "ComMer embedding store: one merged soft prompt per user.",
            "num_embeddings": str(k),
            "hidden_size": str(d),
            **({"dtype": dtype} if dtype != "float32" else {}),
        },
    )


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


#: Version of the :class:`CompressionKey` field set; part of its digest, so adding a field
#: (and bumping this) makes every older key differ from every newer one.
COMPRESSION_KEY_VERSION = 1


@dataclass(frozen=True)
class CompressionKey:
    """Every setting that changes a document's compression; two compressions may be mixed or
    reused only under equal keys.

    The one definition: the manifest records it (``StoreManifest.compression_key``), the
    document cache keeps its entries under :attr:`digest`, and ``--previous`` refuses a store
    whose key differs. A setting that changes the output of the compressor belongs here
    (batching and ``--compile`` do not: they change nothing beyond float rounding, 1e-4).
    """

    checkpoint_fingerprint: str = field(
        metadata=_doc("Fingerprint of the compressor checkpoint (covers its weights and config, prompt_norm included)."))
    base_model_sha256: str = field(metadata=_doc("SHA-256 of the backbone weights ('' when the checkpoint names none)."))
    max_doc_tokens: int = field(metadata=_doc("Documents were truncated at this many tokens."))
    num_embeddings: int = field(metadata=_doc("k: soft-prompt vectors per document."))
    hidden_size: int = field(metadata=_doc("d: the backbone's hidden size."))
    dtype: str = field(metadata=_doc("Compute dtype of the backbone: float32 (CPU) or bfloat16 (CUDA)."))
    device_class: str = field(metadata=_doc("Where the model ran: cpu or cuda."))
    key_version: int = field(default=COMPRESSION_KEY_VERSION, metadata=_doc("Version of this field set."))

    def __post_init__(self) -> None:
        _require_str("compression_key.checkpoint_fingerprint", self.checkpoint_fingerprint)
        if not isinstance(self.base_model_sha256, str):
            raise ValueError(f"manifest field 'compression_key.base_model_sha256' must be a string "
                             f"(got {self.base_model_sha256!r})")
        for name in ("max_doc_tokens", "num_embeddings", "hidden_size", "key_version"):
            _check_positive_int(f"manifest field 'compression_key.{name}'", getattr(self, name))
        for name in ("dtype", "device_class"):
            _require_str(f"compression_key.{name}", getattr(self, name))

    @property
    def digest(self) -> str:
        """A stable hex digest (sha256 of the sorted-key JSON of every field)."""
        canonical = json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """The fields plus ``digest`` (for readers; ignored when read back)."""
        return {**dataclasses.asdict(self), "digest": self.digest}

    @classmethod
    def from_dict(cls, data: Any) -> CompressionKey:
        """Parse a manifest's ``compression_key`` object; ``ValueError`` names a missing or bad field."""
        if not isinstance(data, dict):
            raise ValueError(f"manifest field 'compression_key' must be an object (got {type(data).__name__})")
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in data:
                kwargs[f.name] = data[f.name]
            elif f.default is dataclasses.MISSING:
                raise ValueError(f"manifest field 'compression_key.{f.name}' is missing")
        return cls(**kwargs)

    def differences(self, other: CompressionKey) -> list[str]:
        """``name: mine vs other`` for every field that differs."""
        return [f"{f.name} {getattr(self, f.name)!r} vs {getattr(other, f.name)!r}"
                for f in dataclasses.fields(self) if getattr(self, f.name) != getattr(other, f.name)]


@dataclass(frozen=True)
class StoreManifest:
    """What a committed store was built from; written last, read first.

    Construction validates every field (``ValueError`` naming the field), so a
    manifest that exists is a manifest that can be trusted by readers.
    """

    checkpoint_fingerprint: str = field(metadata=_doc("Fingerprint of the compressor checkpoint used."))
    base_model: str = field(metadata=_doc("Backbone identifier (hub id, path or built-in name)."))
    base_model_sha256: str | None = field(
        metadata=_doc("SHA-256 of the backbone weights file, or null when not hashed.")
    )
    num_embeddings: int = field(metadata=_doc("k: soft-prompt vectors per user."))
    hidden_size: int = field(metadata=_doc("d: the backbone's hidden size."))
    counts: dict[str, int] = field(
        metadata=_doc("Named counters of the run, e.g. users, documents, dead_letters.")
    )
    input_pattern: str = field(metadata=_doc("The corpus file pattern that was read."))
    runner: str = field(metadata=_doc("The Beam runner that executed the job."))
    started_at: datetime = field(metadata=_doc("Job start, timezone-aware (ISO 8601 in JSON)."))
    finished_at: datetime = field(metadata=_doc("Job end, timezone-aware (ISO 8601 in JSON)."))
    package_version: str = field(metadata=_doc("commer-pipeline version that wrote the store."))
    format_version: int = field(
        default=MANIFEST_FORMAT_VERSION, metadata=_doc("Manifest format version (currently 1).")
    )
    previous_store: str | None = field(
        default=None,
        metadata=_doc("The store version an incremental run updated (--previous); null for a full recompute."),
    )
    compression_key: CompressionKey | None = field(
        default=None,
        metadata=_doc("Every setting that changes a compression (checkpoint, base weights, max_doc_tokens, k, d, "
                      "dtype, device class) and its digest; null in stores written before it was recorded "
                      "(unknown: --previous refuses them)."),
    )
    index: StoreIndexInfo | None = field(
        default=None,
        metadata=_doc("The version's lookup index (schemas.store_index: files, users, format); null in stores "
                      "written before it existed, which readers open with a warning and scan instead."),
    )

    def __post_init__(self) -> None:
        for name in ("checkpoint_fingerprint", "base_model", "input_pattern", "runner", "package_version"):
            _require_str(name, getattr(self, name))
        for name in ("base_model_sha256", "previous_store"):
            if getattr(self, name) is not None:
                _require_str(name, getattr(self, name))
        for name in ("num_embeddings", "hidden_size"):
            _check_positive_int(f"manifest field {name!r}", getattr(self, name))
        _check_positive_int("manifest field 'format_version'", self.format_version)
        if self.format_version > MANIFEST_FORMAT_VERSION:
            raise ValueError(
                f"manifest field 'format_version' is {self.format_version}; "
                f"this code reads up to {MANIFEST_FORMAT_VERSION}"
            )
        if not isinstance(self.counts, dict):
            raise ValueError(f"manifest field 'counts' must be an object (got {type(self.counts).__name__})")
        for key, value in self.counts.items():
            if not isinstance(key, str) or isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"manifest field 'counts' must map names to ints >= 0 (bad entry {key!r}: {value!r})")
        for name in ("started_at", "finished_at"):
            value = getattr(self, name)
            if not isinstance(value, datetime) or value.tzinfo is None:
                raise ValueError(f"manifest field {name!r} must be a timezone-aware datetime (got {value!r})")
        if self.finished_at < self.started_at:
            raise ValueError("manifest field 'finished_at' is before 'started_at'")
        if self.compression_key is not None and not isinstance(self.compression_key, CompressionKey):
            raise ValueError(f"manifest field 'compression_key' must be a CompressionKey (got {self.compression_key!r})")
        if self.index is not None and not isinstance(self.index, StoreIndexInfo):
            raise ValueError(f"manifest field 'index' must be a StoreIndexInfo (got {self.index!r})")

    def to_json(self) -> str:
        """Stable, human-readable JSON (sorted keys, ISO 8601 times)."""
        data = dataclasses.asdict(self)
        for name in ("started_at", "finished_at"):
            data[name] = data[name].isoformat()
        data["compression_key"] = self.compression_key.to_dict() if self.compression_key is not None else None
        data["index"] = self.index.to_dict() if self.index is not None else None
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> StoreManifest:
        """Parse and validate; ``ValueError`` names the missing or malformed field.

        Unknown keys are ignored so that additive fields do not need a new format version.
        """
        try:
            data: Any = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"manifest is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"manifest must be a JSON object (got {type(data).__name__})")
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                if f.default is dataclasses.MISSING:
                    raise ValueError(f"manifest field {f.name!r} is missing")
                continue
            kwargs[f.name] = data[f.name]
        for name in ("started_at", "finished_at"):
            kwargs[name] = _parse_time(name, kwargs[name])
        if kwargs.get("compression_key") is not None:
            kwargs["compression_key"] = CompressionKey.from_dict(kwargs["compression_key"])
        if kwargs.get("index") is not None:
            kwargs["index"] = StoreIndexInfo.from_dict(kwargs["index"])
        return cls(**kwargs)


def _require_str(name: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"manifest field {name!r} must be a non-empty string (got {value!r})")


def _parse_time(name: str, value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"manifest field {name!r} must be an ISO 8601 string (got {value!r})")
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"manifest field {name!r} is not ISO 8601: {value!r}") from exc


#: Manifest field name -> meaning, for docs and ``inspect`` output.
MANIFEST_FIELDS: dict[str, str] = {f.name: f.metadata["doc"] for f in dataclasses.fields(StoreManifest)}
