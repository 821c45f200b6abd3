"""``commer-pipeline personalization-check``: does a user's own stored prompt beat another user's?

The product path end to end: the users' documents are written as a corpus Parquet
(``schemas.corpus``), the real compress job (:func:`pipelines.compress.run_job`) builds a
store, :class:`~commer_core.serving.PersonalizedLM` opens it, and every example's target is
scored with the user's own stored prompt, a deranged other user's stored prompt, and no
prompt. The gap (other minus own, nats per token) and its paired bootstrap interval come
from :mod:`commer_core.personalization`. ``--min-gap`` turns it into a pass/fail check.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from jobs.errors import cli_errors

Scores = list[tuple[float, int]]


def _echo(message: str) -> None:
    click.echo(f"personalization-check: {message}", err=True)


def load_examples(data: Path, split: str, task: str | None) -> list[Any]:
    """Labelled examples of ``data``: a `prepare` folder, an examples .parquet, or official LaMP files."""
    from commer_core.data import lamp_splits, load_lamp, read_examples_parquet

    if data.is_file():
        examples = read_examples_parquet(data)
    elif (data / f"{split}.parquet").is_file():
        examples = read_examples_parquet(data / f"{split}.parquet")
    elif split in lamp_splits(data):
        examples = load_lamp(task or _lamp_task(data, split), data, split)
    else:
        raise click.ClickException(f"{data} holds neither {split}.parquet (from `prepare`) nor official LaMP "
                                   f"{split} files ({split}/{split}_questions.json)")
    labelled = [e for e in examples if e.target is not None]
    if not labelled:
        raise click.ClickException(f"{data}: the {split} split has no labelled example (no outputs file?)")
    return labelled


def _lamp_task(data: Path, split: str) -> str:
    """The task named by the official outputs file (``"task": "LaMP_7"``)."""
    from commer_core.data import lamp_files
    from commer_core.data.examples import read_json

    _, outputs = lamp_files(data, split)
    task = read_json(outputs).get("task") if outputs is not None else None
    if not isinstance(task, str):
        raise click.ClickException(f"cannot tell the LaMP task of {data}; pass --task lamp4 or lamp7")
    return task


def user_documents(examples: Sequence[Any], prepared: Sequence[Any], all_docs: bool) -> list[tuple[str, Any]]:
    """(user_id, Document) pairs to compress: each user's selected documents (all of them with ``all_docs``)."""
    pairs: list[tuple[str, Any]] = []
    for raw, prep in zip(examples, prepared):
        if all_docs:
            pairs.extend((raw.user_id, d) for d in raw.documents)
            continue
        by_text = {d.text: d for d in raw.documents}
        pairs.extend((raw.user_id, by_text[t]) for t in prep.documents)
    return pairs


def score_with_partners(lm: Any, examples: Sequence[Any], partner: dict[str, str] | None, *,
                        batch_size: int, progress: str | None = None) -> Scores:
    """(summed NLL, tokens) of each example under the stored prompt of ``partner[user]`` (None: no prompt)."""
    import torch

    out: Scores = []
    with torch.inference_mode():
        for start in range(0, len(examples), batch_size):
            batch = examples[start : start + batch_size]
            inputs, targets = [e.input for e in batch], [e.target for e in batch]
            if partner is None:
                scored = lm.generator.score([None] * len(batch), inputs, targets)
            else:
                scored = lm.score([partner[e.user_id] for e in batch], inputs, targets)
            out.extend((s.nll, s.n_tokens) for s in scored)
            if progress:
                _echo(f"{progress}: {len(out)}/{len(examples)} examples")
    return out


def check_report(lm: Any, examples: Sequence[Any], *, seed: int, batch_size: int,
                 progress: bool = True) -> dict[str, Any]:
    """Own vs deranged other user's stored prompt vs no prompt, with the gap and its interval."""
    from commer_core.personalization import derangement, personalization_gap
    from commer_core.training import corpus_perplexity

    users = sorted({e.user_id for e in examples})
    partner = derangement(users, seed)
    own_map = {u: u for u in users}
    label = (lambda name: name) if progress else (lambda name: None)
    own = score_with_partners(lm, examples, own_map, batch_size=batch_size, progress=label("own"))
    other = score_with_partners(lm, examples, partner, batch_size=batch_size, progress=label("other user"))
    none = score_with_partners(lm, examples, None, batch_size=batch_size, progress=label("no prompt"))
    gap = personalization_gap(own, other, seed=seed)
    return {"examples": len(examples), "users": len(users), "seed": seed,
            "own_perplexity": corpus_perplexity(own), "other_perplexity": corpus_perplexity(other),
            "none_perplexity": corpus_perplexity(none), "gap": gap.to_dict(),
            "none_gap": personalization_gap(own, none, seed=seed).to_dict(),
            "per_example": per_example_rows(examples, partner, own, other, none)}


def per_example_rows(examples: Sequence[Any], partner: dict[str, str], own: Scores, other: Scores,
                     none: Scores) -> list[dict[str, Any]]:
    """One row per example (nats per target token under each prompt): which examples the own prompt loses on."""
    return [{"example_id": e.example_id, "user_id": e.user_id, "other_user_id": partner[e.user_id],
             "target_tokens": o[1], "own_nats": o[0] / o[1], "other_nats": x[0] / x[1], "none_nats": n[0] / n[1]}
            for e, o, x, n in zip(examples, own, other, none, strict=True)]


def failures(report: dict[str, Any], min_gap: float | None, min_own_better: float | None) -> list[str]:
    """Why the check fails its thresholds (empty: it passes)."""
    gap, out = report["gap"], []
    if min_gap is not None and gap["gap"] < min_gap:
        out.append(f"gap {gap['gap']:.3f} < --min-gap {min_gap}")
    if min_gap is not None and gap["low"] <= 0:
        out.append(f"95% interval low {gap['low']:.3f} <= 0")
    if min_own_better is not None and gap["own_better"] < min_own_better:
        out.append(f"own better on {gap['own_better']:.1%} < --min-own-better {min_own_better:.0%}")
    return out


def compress_users(pairs: Sequence[tuple[str, Any]], output: Path, checkpoint: Path, *, device: str,
                   overwrite: bool) -> Path:
    """Write the corpus Parquet and run the real compress job on it; returns the store folder."""
    from commer_core.data import write_corpus_parquet
    from pipelines.compress import CompressError, CompressParams, run_job

    corpus = output / "corpus" / "part-0.parquet"
    counts = write_corpus_parquet(pairs, corpus)
    if counts["rows"] == 0:
        raise click.ClickException(f"no valid document to compress ({counts['skipped']} skipped as invalid)")
    _echo(f"corpus {corpus}: {counts['rows']} documents ({counts['skipped']} invalid skipped); compressing ...")
    store = output / "store"
    params = CompressParams(input=str(corpus), output=str(store), checkpoint=str(checkpoint), device=device,
                            overwrite=overwrite, progress_every=0)
    try:
        run_job(params, echo=_echo)
    except (CompressError, ValueError) as exc:  # context for @cli_errors' one line
        raise CompressError(f"compress job failed: {exc}") from exc
    return store


def _summary_line(report: dict[str, Any]) -> str:
    g = report["gap"]
    return (f"own ppl {report['own_perplexity']:.3f} | other-user ppl {report['other_perplexity']:.3f} | "
            f"no prompt ppl {report['none_perplexity']:.3f} | gap {g['gap']:+.3f} nats/token "
            f"[{g['low']:+.3f}, {g['high']:+.3f}] | own better on {g['own_better']:.1%} of {report['examples']} examples")


@click.command("personalization-check")
@click.option("--data", required=True, type=click.Path(exists=True, path_type=Path),
              help="A `prepare` output folder, an examples .parquet file, or a folder of official LaMP files.")
@click.option("--split", default="dev", show_default=True, help="Which split of --data to score.")
@click.option("--task", type=click.Choice(["lamp4", "lamp7"]), default=None,
              help="LaMP task of official files [default: read from the outputs file].")
@click.option("--checkpoint", default="default", show_default=True,
              help="ComMer checkpoint directory, training output folder, or 'default' (the bundled one).")
@click.option("--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Writes corpus/, store/ and personalization.json here.")
@click.option("--docs-per-user", default=8, show_default=True,
              help="Documents compressed per example's user, selected against its input (0: all of the profile).")
@click.option("--selection", type=click.Choice(["bm25", "random", "recent"]), default="bm25", show_default=True)
@click.option("--max-examples", default=200, show_default=True, help="Score the first N labelled examples.")
@click.option("--max-input-tokens", default=256, show_default=True)
@click.option("--max-target-tokens", default=64, show_default=True)
@click.option("--batch-size", default=8, show_default=True)
@click.option("--seed", default=0, show_default=True, help="Seed of the user derangement, selection and bootstrap.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--threads", type=int, default=None, help="torch CPU threads [default: torch's choice].")
@click.option("--overwrite", is_flag=True, help="Replace a store already committed under --output.")
@click.option("--min-gap", type=float, default=None,
              help="Exit 1 unless gap >= X nats per token and the 95% interval's low end is > 0.")
@click.option("--min-own-better", type=float, default=None,
              help="Exit 1 unless own beats another user's prompt on at least this share of examples (e.g. 0.85).")
@click.option("--progress/--no-progress", default=True, show_default=True)
@cli_errors
def personalization_check(data: Path, split: str, task: str | None, checkpoint: str, output: Path, docs_per_user: int,
                          selection: str, max_examples: int, max_input_tokens: int, max_target_tokens: int,
                          batch_size: int, seed: int, device: str, threads: int | None, overwrite: bool,
                          min_gap: float | None, min_own_better: float | None, progress: bool) -> None:
    """Personalization gap through the product path: compress -> store -> PersonalizedLM.

    Scores each example's target with the user's own stored prompt, a deranged other
    user's stored prompt, and no prompt; prints the gap (other minus own, nats per token)
    with a paired bootstrap 95% interval and writes OUTPUT/personalization.json (with one
    row per example under ``per_example``).
    """
    if docs_per_user < 0 or max_examples < 1 or batch_size < 1:
        raise click.ClickException("--docs-per-user must be >= 0, --max-examples and --batch-size >= 1")
    if threads:
        import torch

        torch.set_num_threads(threads)
    ckpt, examples, prepared = _inputs(data, split, task, checkpoint, docs_per_user, selection, seed,
                                       max_examples, max_input_tokens, max_target_tokens)
    store = compress_users(user_documents(examples, prepared, docs_per_user == 0), output, ckpt, device=device,
                           overwrite=overwrite)
    report = _score_store(store, ckpt, prepared, device=device, seed=seed, batch_size=batch_size, progress=progress)
    report.update(checkpoint=str(ckpt), data=str(data), split=split, docs_per_user=docs_per_user,
                  selection=selection, store=str(store))
    path = output / "personalization.json"
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    click.echo(_summary_line(report))
    click.echo(json.dumps({"report": str(path)}))
    problems = failures(report, min_gap, min_own_better)
    if problems:
        raise click.ClickException("personalization check failed: " + "; ".join(problems))


def _inputs(data: Path, split: str, task: str | None, checkpoint: str, docs_per_user: int, selection: str, seed: int,
            max_examples: int, max_input_tokens: int, max_target_tokens: int) -> tuple[Path, list[Any], list[Any]]:
    """The resolved ComMer checkpoint, the raw examples and their prepared (selected, truncated) forms."""
    from commer_core.backbone import load_base_tokenizer
    from commer_core.training import checkpoint_info, prepare_examples

    info = checkpoint_info(checkpoint)
    examples = load_examples(data, split, task)[:max_examples]
    if info["method"] != "commer":
        raise click.ClickException(f"{info['path']} is a {info['method']} checkpoint; the product path needs ComMer")
    if len({e.user_id for e in examples}) < 2:
        raise click.ClickException("a personalization check needs examples of at least 2 users")
    prepared = prepare_examples(examples, load_base_tokenizer(info["base_model"]), n_docs=docs_per_user,
                                selection=selection, seed=seed, max_input_tokens=max_input_tokens,
                                max_target_tokens=max_target_tokens)
    return Path(info["path"]), examples, prepared


def _score_store(store: Path, checkpoint: Path, prepared: list[Any], *, device: str, seed: int, batch_size: int,
                 progress: bool) -> dict[str, Any]:
    """Open the store with PersonalizedLM and score the examples of users it holds."""
    from commer_core.serving import PersonalizedLM

    lm = PersonalizedLM.open(store, checkpoint, device=device)
    stored = set(lm.prompts(sorted({e.user_id for e in prepared})))
    kept = [e for e in prepared if e.user_id in stored]
    if len(stored) < 2:
        raise click.ClickException(f"the store holds {len(stored)} of the examples' users; need at least 2")
    if progress:
        _echo(f"scoring {len(kept)} examples of {len(stored)} users ({len(prepared) - len(kept)} without documents)")
    report = check_report(lm, kept, seed=seed, batch_size=batch_size, progress=progress)
    report["examples_without_documents"] = len(prepared) - len(kept)
    return report
