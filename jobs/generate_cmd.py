"""`commer-pipeline generate`: personalized generation from a committed store."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from commer_core.defaults import default_checkpoint_path
from jobs.errors import cli_errors

if TYPE_CHECKING:
    from commer_core.serving import PersonalizedLM, Request, Response


@click.command("generate")
@click.option("--store", "store_uri", required=True, help="A committed embedding store (the compress job's --output).")
@click.option("--checkpoint", default=default_checkpoint_path, show_default="the bundled checkpoint",
              help="The checkpoint that produced the store (a folder or a gs:// / s3:// URI); its backbone "
                   "generates.")
@click.option("--user", "user_id", help="One request: the user whose soft prompt personalizes the output.")
@click.option("--input", "input_text", help="One request: the task input, e.g. 'Paraphrase the following tweet: ...'.")
@click.option("--requests", "requests_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Batch mode: a Parquet file with columns user_id, input.")
@click.option("--output", "output_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Batch mode: Parquet file to write (user_id, input, output, error, truncated, personalized, "
                   "new_tokens, latency_s).")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1, 1024))
@click.option("--max-new-tokens", default=32, show_default=True, type=click.IntRange(1, 4096))
@click.option("--sample/--greedy", default=False, show_default=True, help="Sample instead of greedy decoding.")
@click.option("--temperature", default=1.0, show_default=True, type=click.FloatRange(min=0.0, min_open=True))
@click.option("--top-p", default=1.0, show_default=True, type=click.FloatRange(0.0, 1.0, min_open=True))
@click.option("--seed", type=int, default=None, help="Seed for sampling.")
@click.option("--stop", "stop_strings", multiple=True, help="Stop string (repeatable); output is cut before it.")
@click.option("--fallback", type=click.Choice(["error", "none"]), default="error", show_default=True,
              help="Unknown user: a per-row error, or generation without personalization.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True)
@cli_errors
def generate(store_uri: str, checkpoint: str, user_id: str | None, input_text: str | None,
             requests_path: Path | None, output_path: Path | None, batch_size: int, max_new_tokens: int,
             sample: bool, temperature: float, top_p: float, seed: int | None, stop_strings: tuple[str, ...],
             fallback: str, device: str) -> None:
    """Generate text for users from their stored soft prompts.

    One request: --user U --input TEXT (prints the output). Batch: --requests IN.parquet
    --output OUT.parquet. An unknown user or a null or empty input fails only its own row; an
    input longer than the model's positions allow is cut to its first tokens and flagged
    (column ``truncated``; a warning on stderr for one request).
    """
    single = user_id is not None or input_text is not None
    if single == (requests_path is not None):
        raise click.UsageError("give either --user and --input, or --requests and --output")
    if single and (user_id is None or input_text is None):
        raise click.UsageError("one request needs both --user and --input")
    if requests_path is not None and output_path is None:
        raise click.UsageError("--requests needs --output")

    from commer_core.serving import PersonalizedLM, Request

    requests = [Request(user_id, input_text)] if single else _read_requests(requests_path)
    lm = PersonalizedLM.open(store_uri, checkpoint, device=device)
    options = dict(max_new_tokens=max_new_tokens, do_sample=sample, temperature=temperature, top_p=top_p,
                   stop_strings=stop_strings, seed=seed)
    responses = _answer(lm, requests, batch_size, fallback, options, progress=not single)
    if single:
        response = responses[0]
        if response.error:
            raise click.ClickException(response.error)
        if response.truncated:
            click.echo("warning: the input is longer than the model's positions allow; only its first tokens "
                       "were read", err=True)
        click.echo(response.output)
        return
    _write_responses(responses, output_path)
    failed = sum(r.error is not None for r in responses)
    cut = sum(r.truncated for r in responses)
    tokens = sum(r.new_tokens for r in responses)
    click.echo(f"wrote {len(responses)} rows to {output_path} ({failed} errors, {cut} inputs truncated, "
               f"{tokens} new tokens)", err=True)
    if failed == len(responses):
        sys.exit(1)


def _answer(lm: "PersonalizedLM", requests: Sequence["Request"], batch_size: int, fallback: str,
            options: dict[str, Any], *, progress: bool) -> list["Response"]:
    from tqdm import tqdm

    out = []
    with tqdm(total=len(requests), unit="req", disable=not progress, file=sys.stderr) as bar:
        for start in range(0, len(requests), batch_size):
            chunk = requests[start : start + batch_size]
            out.extend(lm.generate(chunk, batch_size=batch_size, fallback=fallback, **options))  # type: ignore[arg-type]
            bar.update(len(chunk))
    return out


def _read_requests(path: Path) -> list["Request"]:
    """Rows of a requests file; a null user_id or input is kept, to be answered with a per-row error."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from commer_core.serving import Request

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for unreadable files
        raise ValueError(f"{path}: not a readable Parquet file ({exc})") from exc
    missing = [c for c in ("user_id", "input") if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; requests need user_id and input")
    for name in ("user_id", "input"):
        kind = table.schema.field(name).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)):
            raise ValueError(f"{path}: column {name} is {kind}; requests need string columns user_id and input")
    rows = table.select(["user_id", "input"]).to_pylist()
    return [Request(r["user_id"], r["input"]) for r in rows]


def _write_responses(responses: Sequence["Response"], path: Path) -> None:
    import dataclasses

    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("user_id", pa.string()), ("input", pa.string()), ("output", pa.string()),
                        ("error", pa.string()), ("truncated", pa.bool_()), ("personalized", pa.bool_()),
                        ("new_tokens", pa.int32()),
                        ("latency_s", pa.float64())])
    rows = [dataclasses.asdict(r) for r in responses]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, compression="zstd")
