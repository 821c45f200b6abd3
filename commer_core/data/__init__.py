"""Dataset readers (LaMP, PerLTQA), the shared Example model, and document selection.

Imports neither beam, click nor torch: the trainer and the CLI both build on it.
"""

from commer_core.data.examples import (
    EXAMPLE_SCHEMA,
    DataFormatError,
    Document,
    Example,
    iter_examples_parquet,
    parse_timestamp,
    prepare,
    read_examples_parquet,
    write_corpus_parquet,
    write_examples_parquet,
)
from commer_core.data.lamp import LAMP_PREFIXES, LAMP_SPLITS, lamp_files, lamp_splits, load_lamp, normalize_task
from commer_core.data.perltqa import (
    find_perltqa_files,
    load_perltqa,
    load_perltqa_memory,
    load_perltqa_qa,
    split_characters,
    split_perltqa,
)
from commer_core.data.selection import STRATEGIES, select_documents, stable_key, tokenize

__all__ = [
    "EXAMPLE_SCHEMA",
    "LAMP_PREFIXES",
    "LAMP_SPLITS",
    "STRATEGIES",
    "DataFormatError",
    "Document",
    "Example",
    "find_perltqa_files",
    "iter_examples_parquet",
    "lamp_files",
    "lamp_splits",
    "load_lamp",
    "load_perltqa",
    "load_perltqa_memory",
    "load_perltqa_qa",
    "normalize_task",
    "parse_timestamp",
    "prepare",
    "read_examples_parquet",
    "select_documents",
    "split_characters",
    "split_perltqa",
    "stable_key",
    "tokenize",
    "write_corpus_parquet",
    "write_examples_parquet",
]
