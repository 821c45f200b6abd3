"""Arrow schemas and validation shared by every stage; imports only pyarrow."""

from schemas.corpus import CORPUS_SCHEMA, TIMESTAMP_TYPE, doc_field, field_doc
from schemas.dead_letter import DEAD_LETTER_SCHEMA, DEAD_LETTER_STAGES, dead_letter_row
from schemas.documents import DOCUMENT_INDEX_SCHEMA, doc_cache_schema, text_sha256
from schemas.store import MANIFEST_FIELDS, MANIFEST_FORMAT_VERSION, StoreManifest, store_schema
from schemas.store_index import (
    INDEX_FILES_NAME,
    INDEX_FILES_SCHEMA,
    INDEX_FORMAT_VERSION,
    INDEX_USERS_NAME,
    INDEX_USERS_SCHEMA,
    StoreIndexInfo,
)
from schemas.validation import SchemaError, check_row, is_stringlike, normalize_row, validate_corpus_schema

__all__ = [
    "CORPUS_SCHEMA",
    "DEAD_LETTER_SCHEMA",
    "DOCUMENT_INDEX_SCHEMA",
    "DEAD_LETTER_STAGES",
    "INDEX_FILES_NAME",
    "INDEX_FILES_SCHEMA",
    "INDEX_FORMAT_VERSION",
    "INDEX_USERS_NAME",
    "INDEX_USERS_SCHEMA",
    "MANIFEST_FIELDS",
    "MANIFEST_FORMAT_VERSION",
    "TIMESTAMP_TYPE",
    "SchemaError",
    "StoreIndexInfo",
    "StoreManifest",
    "check_row",
    "dead_letter_row",
    "doc_cache_schema",
    "doc_field",
    "field_doc",
    "is_stringlike",
    "normalize_row",
    "store_schema",
    "text_sha256",
    "validate_corpus_schema",
]
