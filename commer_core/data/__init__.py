"""Dataset readers (LaMP, PerLTQA), the shared Example model, and document selection.

Imports neither beam, click nor torch: the trainer and the CLI both build on it.
Modules, each importing only those before it: ``examples`` (Example, Document,
Parquet I/O), ``selection`` (which documents go with an example), ``lamp`` and
``perltqa`` (readers), ``prepare`` (official files -> examples and corpora), ``sources``
(where train and evaluate read examples: prepare output or a ``datasets`` folder; import it
as ``commer_core.data.sources``, it loads ``datasets``).
"""

from commer_core.data.examples import (
    EXAMPLE_SCHEMA,
    DataFormatError,
    Document,
    Example,
    ExampleColumnsError,
    check_example_columns,
    examples_from_batches,
    iter_examples_parquet,
    parse_timestamp,
    read_examples_parquet,
    write_corpus_parquet,
    write_examples_parquet,
)
from commer_core.data.selection import STRATEGIES, bm25_words, select_documents, stable_key
from commer_core.data.lamp import LAMP_PREFIXES, LAMP_SPLITS, lamp_files, lamp_splits, load_lamp, normalize_task
from commer_core.data.perltqa import (
    find_perltqa_files,
    load_perltqa,
    load_perltqa_memory,
    load_perltqa_qa,
    split_characters,
    split_perltqa,
)
from commer_core.data.prepare import prepare_task_data

__all__ = [
    "EXAMPLE_SCHEMA",
    "LAMP_PREFIXES",
    "LAMP_SPLITS",
    "STRATEGIES",
    "DataFormatError",
    "Document",
    "Example",
    "ExampleColumnsError",
    "bm25_words",
    "check_example_columns",
    "examples_from_batches",
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
    "prepare_task_data",
    "read_examples_parquet",
    "select_documents",
    "split_characters",
    "split_perltqa",
    "stable_key",
    "write_corpus_parquet",
    "write_examples_parquet",
]
