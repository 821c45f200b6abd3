"""The compress job's options, declared once.

Each field of :class:`CompressParams` carries its flag, help text and the default the help
states; both entry points are generated from here: ``python -m pipelines.compress``
(argparse, :func:`argument_parser`) and ``commer-pipeline compress`` (Click, in
``jobs/compress_cmd.py``), so a flag, its help and its default cannot drift apart.
Light on purpose (no Beam, no torch): ``--help`` imports it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from commer_core.defaults import CPU_BATCH_TOKENS, CPU_MAX_BATCH_SIZE, CUDA_BATCH_TOKENS, CUDA_MAX_BATCH_SIZE
from pipelines.user_buckets import ROWS_PER_BUCKET

DEFAULT_OUTPUT = "./commer-output"
KEEP_VERSIONS = 2  # committed versions kept under --output by default
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class OptionSpec:
    """One command-line option as both parsers see it."""

    name: str  # the CompressParams field
    flags: tuple[str, ...]
    help: str  # with the default it states, "[default: ...]"
    kind: type  # bool, int or str
    default: Any
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    minimum: int | None = None
    negatable: bool = False  # a --no-X form


def option(
    default: Any,
    help: str,
    *,
    flags: tuple[str, ...] = (),
    metavar: str | None = None,
    choices: tuple[str, ...] | None = None,
    minimum: int | None = None,
    negatable: bool = False,
    default_text: str | None = None,
) -> Any:
    """A dataclass field that is also a command-line option (``default_text``: how help states a None default)."""
    meta = {"flags": flags, "help": help, "metavar": metavar, "choices": choices, "minimum": minimum,
            "negatable": negatable, "default_text": default_text}
    return field(default=default, metadata={"option": meta})


@dataclass(frozen=True)
class CompressParams:
    """What the job is asked to do (Beam's own options travel separately).

    ``input``/``checkpoint`` None select the embedded default: the generated sample corpus
    and the bundled checkpoint. ``max_doc_tokens`` None means the checkpoint's value.
    """

    input: str | None = option(
        None, "Parquet file pattern or directory, on any Beam filesystem.", metavar="PATTERN",
        default_text="a generated sample corpus")
    output: str = option(
        DEFAULT_OUTPUT, "Store directory (local, gs://, s3://). Each run adds a version and points OUTPUT/LATEST at "
        "it on success; a committed store is only replaced with --overwrite or updated with --previous.", metavar="URI")
    checkpoint: str | None = option(None, "Compressor checkpoint.", metavar="DIR", default_text="the bundled one")
    base_model: str | None = option(None, "Backbone to load.", metavar="ID", default_text="the checkpoint's")
    user_column: str = option("user_id", "Input column holding the user id.")
    doc_id_column: str = option("doc_id", "Input column holding the document id (unique per user).")
    text_column: str = option("text", "Input column holding the document text.")
    max_doc_tokens: int | None = option(
        None, "Truncate documents at N tokens.", metavar="N", minimum=1, default_text="the checkpoint's")
    batch_tokens: int | None = option(
        None, "Padded-token budget of one forward pass.", metavar="N", minimum=1,
        default_text=f"{CPU_BATCH_TOKENS} on CPU, the fastest measured on a 2-core CPU; {CUDA_BATCH_TOKENS} with "
        "CUDA, measured on an H100")
    max_batch_size: int | None = option(
        None, "Most documents in one forward pass.", metavar="N", minimum=1,
        default_text=f"{CPU_MAX_BATCH_SIZE} on CPU, {CUDA_MAX_BATCH_SIZE} with CUDA")
    device: str = option("auto", "auto: CUDA (bf16) when the worker has one, else CPU (fp32).", choices=DEVICES)
    large_model: bool = option(
        False, "One model per worker machine shared by its SDK processes (Beam's large_model).",
        flags=("--large-model", "--share-model"), negatable=True)
    compile_model: bool = option(
        False, "torch.compile the decoder layers in each worker (10-30 s start-up per process; CPU workers need a "
        "C++ compiler). No reliable gain measured on CPU; on an H100 it made a 2B model's compression 18-23% faster "
        "(docs/PERFORMANCE.md).", flags=("--compile",), negatable=True)
    progress_every: int = option(
        32, "Log a progress line every N documents per worker process (0: off).", metavar="N", minimum=0)
    store_ranges: int = option(
        256, "User-id ranges the store is clustered into (more: less memory per write step).", metavar="N", minimum=1)
    user_buckets: int | None = option(
        None, "Compress the users in N hash buckets, one pipeline after another, into the same version: bounds the "
        "memory of the in-process DirectRunner, which holds every shuffle in memory.", metavar="N", minimum=1,
        default_text=f"one bucket per {ROWS_PER_BUCKET:,} rows (input + previous store's documents) on the "
        "DirectRunner, 1 on distributed runners")
    previous: str | None = option(
        None, "Update this store incrementally: compress only documents it does not cover yet (same "
        "compression key required: checkpoint, base weights, max-doc-tokens, device class). Users absent from "
        "--input keep their row. Usually the same as --output.", metavar="STORE")
    full_snapshot: bool = option(False, "With --previous: --input holds every user; users absent from it are dropped.")
    allow_empty: bool = option(
        False, "With --previous --full-snapshot: commit even when --input holds no valid document (every user "
        "is dropped). Without it such a run is refused.")
    doc_cache: str | None = option(
        None, "Per-document compression cache (Parquet, keyed by document and compression key: checkpoint, base "
        "weights, max-doc-tokens, dtype, device class): edits and deletions are "
        "recomputed from it without the model; tonight's compressions are added.", metavar="DIR")
    overwrite: bool = option(False, "Replace a committed store at --output.")
    keep_versions: int = option(
        KEEP_VERSIONS, "Committed versions kept under --output (older ones are removed after the commit).",
        metavar="N", minimum=1)
    store_dtype: str = option(
        "float32", "Value type of the stored prompts: float16 halves the store (measured effect on the "
        "personalization gap: docs/PERFORMANCE.md, \"Serving\"); readers always get float32.",
        choices=("float32", "float16"))
    rows_per_row_group: int = 64  # users per store row group (not a flag)

    def __post_init__(self) -> None:
        for spec in option_specs():
            check_minimum(spec, getattr(self, spec.name))
        if self.rows_per_row_group < 1:
            raise ValueError(f"rows_per_row_group must be >= 1 (got {self.rows_per_row_group})")
        if not self.output:
            raise ValueError("--output must not be empty")
        if self.input is not None and not self.input.strip():
            raise ValueError("--input must not be empty (omit it to run on the generated sample corpus)")
        if self.full_snapshot and not self.previous:
            raise ValueError("--full-snapshot only applies with --previous (without it every run is a full snapshot)")
        if self.device not in DEVICES:
            raise ValueError(f"--device must be auto, cpu or cuda (got {self.device!r})")
        columns = (self.user_column, self.doc_id_column, self.text_column)
        if len(set(columns)) != 3 or not all(columns):
            raise ValueError(f"user, doc-id and text columns must be three distinct names (got {columns})")


def check_minimum(spec: OptionSpec, value: Any) -> None:
    """Both parsers and direct callers get the same range check."""
    if spec.minimum is not None and value is not None and value < spec.minimum:
        raise ValueError(f"{spec.flags[0]} must be >= {spec.minimum} (got {value})")


def _stated_default(default: Any, default_text: str | None) -> str | None:
    if default_text is not None:
        return default_text
    return None if default is None or isinstance(default, bool) else str(default)


def _spec(f: Any) -> OptionSpec:
    meta = f.metadata["option"]
    stated = _stated_default(f.default, meta["default_text"])
    kind = bool if isinstance(f.default, bool) else int if "int" in str(f.type) else str
    return OptionSpec(
        name=f.name,
        flags=meta["flags"] or ("--" + f.name.replace("_", "-"),),
        help=f"{meta['help']} [default: {stated}]" if stated else meta["help"],
        kind=kind,
        default=f.default,
        metavar=meta["metavar"],
        choices=meta["choices"],
        minimum=meta["minimum"],
        negatable=meta["negatable"],
    )


def option_specs() -> list[OptionSpec]:
    """Every option of the job, in declaration order."""
    return [_spec(f) for f in fields(CompressParams) if f.default is not MISSING and "option" in f.metadata]


# -- the argparse entry point (python -m pipelines.compress) --------------------------------
def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum} (got {value})")
        return value

    parse.__name__ = "int"  # argparse names the type in its error messages
    return parse


def _add_argument(parser: argparse.ArgumentParser, spec: OptionSpec) -> None:
    kwargs: dict[str, Any] = {"dest": spec.name, "default": spec.default, "help": spec.help.replace("%", "%%")}
    if spec.kind is bool:
        kwargs["action"] = argparse.BooleanOptionalAction if spec.negatable else "store_true"
    else:
        kwargs.update(metavar=spec.metavar, choices=spec.choices)
        if spec.kind is int:
            kwargs["type"] = int if spec.minimum is None else _at_least(spec.minimum)
    parser.add_argument(*spec.flags, **kwargs)


def argument_parser(description: str = "") -> argparse.ArgumentParser:
    """The job's own flags; everything else is a Beam pipeline option."""
    parser = argparse.ArgumentParser(prog="pipelines.compress", description=description)
    for spec in option_specs():
        _add_argument(parser, spec)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> tuple[CompressParams, list[str]]:
    """``(params, beam_args)`` from a command line; unknown flags are Beam's."""
    known, beam_args = argument_parser().parse_known_args(argv)
    return CompressParams(**vars(known)), beam_args
