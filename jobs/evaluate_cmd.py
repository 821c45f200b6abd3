"""``commer-pipeline evaluate``: ComMer checkpoints and baselines on identical examples."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

import click

from jobs.common_options import bf16_option
from jobs.errors import cli_errors


def _int_list(value: str) -> list[int]:
    try:
        out = sorted({int(v) for v in value.split(",") if v.strip()})
    except ValueError as exc:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from exc
    if not out or min(out) < 0:
        raise click.BadParameter(f"expected non-negative integers, got {value!r}")
    return out


def _split_label(value: str) -> tuple[str | None, str]:
    """``label=path`` or ``path``."""
    if "=" in value:
        label, path = value.split("=", 1)
        if label and "/" not in label:
            return label, path
    return None, value


@click.command("evaluate")
@click.option("--checkpoint", "checkpoints", multiple=True,
              help="A trained checkpoint (ComMer or prompt tuning), a training output folder, or 'default' "
                   "(the bundled one). Repeatable; LABEL=PATH names it in the results.")
@click.option("--data", required=True, type=click.Path(exists=True, path_type=Path),
              help="A `prepare` output folder, an examples .parquet file, or a Hugging Face dataset with the same "
                   "columns: a `save_to_disk` folder or a folder of Parquet files.")
@click.option("--split", default="dev", show_default=True,
              help="Which split of --data to score (dev and validation name the same split).")
@click.option("--baseline", "baselines", multiple=True, type=click.Choice(["none", "raw_docs"]),
              default=("none", "raw_docs"), show_default=True, help="Untrained baselines to score beside.")
@click.option("--raw-budget", "raw_budgets", default="128", show_default=True,
              help="Comma-separated token budgets for the raw-documents baseline.")
@click.option("--untrained/--no-untrained", default=True, show_default=True,
              help="Also score a fresh (untrained) compressor of each ComMer checkpoint's configuration.")
@click.option("--docs-at-test", default="8", show_default=True,
              help="Comma-separated numbers of documents per example at test time, e.g. 1,2,4,8.")
@click.option("--selection", type=click.Choice(["bm25", "random", "recent"]), default="bm25", show_default=True)
@click.option("--base-model", default=None,
              help="Backbone for the baselines [default: the checkpoints' base model, else smollm2-135m].")
@click.option("--max-examples", default=200, show_default=True, help="Score the first N labelled examples.")
@click.option("--max-input-tokens", default=256, show_default=True)
@click.option("--max-target-tokens", default=64, show_default=True)
@click.option("--generate", "n_generate", default=32, show_default=True,
              help="Examples per (method, docs) that are generated and ROUGE-scored (0: perplexity only).")
@click.option("--rouge-docs", default=None,
              help="Comma-separated numbers of documents at which to generate [default: the largest of --docs-at-test].")
@click.option("--max-new-tokens", default=32, show_default=True)
@click.option("--batch-size", default=8, show_default=True)
@bf16_option
@click.option("--device", default="cpu", show_default=True)
@click.option("--seed", default=0, show_default=True,
              help="Seed of random document selection, untrained compressors and the user derangement of --swap.")
@click.option("--swap/--no-swap", default=True, show_default=True,
              help="Personalization gap: also score every method that reads documents with another user's "
                   "documents (and ComMer with the mean of all users' prompts). About 2-3x the scoring time.")
@click.option("--swap-with", default=None, metavar="SPLIT",
              help="Take the other users' documents of --swap from this split of --data (its first --max-examples "
                   "labelled examples) instead of --split: for a split with one user, e.g. PerLTQA's unseen "
                   "character (--split test --swap-with train).")
@click.option("--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Writes results.json, results.csv, cost_vs_quality.png, perplexity_vs_docs.png, "
                   "personalization_gap.png.")
@click.option("--threads", type=int, default=None,
              help="torch CPU threads [default: torch's choice]. Use 1 when other jobs share the cores: "
                   "oversubscribed threads slow CPU training by an order of magnitude.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@cli_errors
def evaluate(checkpoints: tuple[str, ...], data: Path, split: str, baselines: tuple[str, ...], raw_budgets: str,
             untrained: bool, docs_at_test: str, selection: str, base_model: str | None, max_examples: int,
             max_input_tokens: int, max_target_tokens: int, n_generate: int, rouge_docs: str | None, max_new_tokens: int,
             batch_size: int, bf16: bool, device: str, seed: int, swap: bool, swap_with: str | None, output: Path,
             threads: int | None, progress: bool) -> None:
    """Perplexity and ROUGE of ComMer checkpoints and baselines, per k and number of documents, with plots."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    from commer_core.data.sources import open_examples
    from commer_core.training import checkpoint_info

    n_docs_list = _int_list(docs_at_test)
    budgets = _int_list(raw_budgets)
    generate_at = _int_list(rouge_docs) if rouge_docs else [max(n_docs_list)]
    source = open_examples(data)
    path = source.describe(split)
    examples = [e for e in source.read(split) if e.target is not None][:max_examples]
    if not examples:
        raise click.ClickException(f"{path} holds no labelled examples")
    pool = None
    if swap_with is not None:
        pool = [e for e in source.read(swap_with) if e.target is not None][:max_examples]
        if not pool:
            raise click.ClickException(f"--swap-with: {source.describe(swap_with)} holds no labelled examples")
    infos = [(label, checkpoint_info(p)) for label, p in map(_split_label, checkpoints)]
    bases = {info["base_model"] for _, info in infos}
    if base_model is not None:
        bases.add(base_model)
    if len(bases) > 1:
        raise click.ClickException(f"all methods must share one base model to be compared, got {sorted(bases)}")
    base = bases.pop() if bases else "smollm2-135m"
    runner = _Runner(examples, n_docs_list, selection=selection, seed=seed, base=base, device=device,
                     batch_size=batch_size, n_generate=n_generate, generate_at=generate_at,
                     max_new_tokens=max_new_tokens, bf16=bf16, swap=swap, pool=pool,
                     max_input_tokens=max_input_tokens, max_target_tokens=max_target_tokens, progress=progress)
    runner.run(infos, baselines, budgets, untrained)
    from commer_core.evaluation import format_personalization, format_table, gap_rows, summarize, write_results

    rows = summarize(runner.records)
    meta = {"data": str(path), "examples": len(examples), "docs_at_test": n_docs_list, "selection": selection,
            "base_model": base, "seed": seed, "checkpoints": runner.checkpoints, "generate": n_generate, "rouge_docs": generate_at,
            "max_input_tokens": max_input_tokens, "max_target_tokens": max_target_tokens, "bf16": bf16,
            "swap": swap, "swap_with": swap_with}
    paths = write_results(output, rows, runner.records, meta=meta)
    if gap_rows(rows):
        click.echo("personalization (gap = other-user minus own, nats per token; > 0: own documents help)")
        click.echo(format_personalization(rows) + "\n")
    click.echo(format_table(rows))
    click.echo(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))


class _Runner:
    """Loads one method at a time (each ComMer checkpoint on a fresh backbone) and scores it."""

    def __init__(self, examples: list[Any], n_docs_list: list[int], *, selection: str, seed: int, base: str,
                 device: str, batch_size: int, n_generate: int, generate_at: list[int], max_new_tokens: int,
                 bf16: bool, swap: bool, pool: list[Any] | None,
                 max_input_tokens: int, max_target_tokens: int, progress: bool) -> None:
        from commer_core.backbone import load_base_tokenizer
        from commer_core.training import prepare_examples

        tokenizer = load_base_tokenizer(base)

        def prepared(rows: list[Any]) -> dict[int, list[Any]]:
            return {n: prepare_examples(rows, tokenizer, n_docs=n, selection=selection, seed=seed,
                                        max_input_tokens=max_input_tokens, max_target_tokens=max_target_tokens)
                    for n in n_docs_list}

        self.by_n = prepared(examples)
        self.pool_by_n = None if pool is None else prepared(pool)
        self.base, self.device, self.seed, self.bf16, self.swap = base, device, seed, bf16, swap
        self.batch_size, self.n_generate, self.max_new_tokens = batch_size, n_generate, max_new_tokens
        self.generate_at = generate_at
        self.progress = progress
        self.records: list[dict[str, Any]] = []
        self.checkpoints: list[dict[str, Any]] = []

    def _score(self, method: Any, spec: Any) -> None:
        from commer_core.evaluation import evaluate_method

        if self.progress:
            click.echo(f"scoring {spec.label} ...", err=True)
        self.records.extend(evaluate_method(method, spec, self.by_n, batch_size=self.batch_size,
                                            generate=self.n_generate, generate_at=self.generate_at,
                                            max_new_tokens=self.max_new_tokens,
                                            bf16=self.bf16, swap=self.swap, swap_seed=self.seed,
                                            swap_pool=self.pool_by_n))

    def run(self, infos: list[tuple[str | None, dict[str, Any]]], baselines: tuple[str, ...], budgets: list[int],
            untrained: bool) -> None:
        from commer_core.backbone import load_backbone
        from commer_core.checkpoint import fingerprint, read_config
        from commer_core.compressor import Compressor
        from commer_core.config import CompressorConfig
        from commer_core.evaluation import MethodSpec
        from commer_core.training import (
            CommerMethod, NoPersonalization, RawDocsMethod, generator_only, load_method, resolve_checkpoint_dir,
        )

        labels: set[str] = set()

        def unique(label: str) -> str:
            out, i = label, 2
            while out in labels:
                out, i = f"{label}-{i}", i + 1
            labels.add(out)
            return out

        untrained_configs: dict[str, CompressorConfig] = {}
        for label, info in infos:
            kind = info["method"]
            default = f"commer-k{info['k']}" if kind == "commer" else f"pt-k{info['k']}-b{info['budget']}"
            spec = MethodSpec(unique(label or default), kind, info["k"], info.get("budget"))
            method = load_method(info["path"], device=self.device)
            self._score(method, spec)
            entry = {"label": spec.label, "method": kind, "path": info["path"], "trained": info["trained"]}
            ckpt_dir = resolve_checkpoint_dir(info["path"])
            if kind == "commer":
                entry["fingerprint"] = fingerprint(ckpt_dir)
                cfg = CompressorConfig.from_dict({**read_config(ckpt_dir)["compressor"], "hidden_size": None})
                untrained_configs.setdefault(json.dumps(cfg.to_dict(), sort_keys=True), cfg)
            self.checkpoints.append(entry)
            del method
            gc.collect()
        if untrained:
            for cfg in untrained_configs.values():
                comp = Compressor(load_backbone(self.base, device=self.device), cfg, seed=self.seed)
                self._score(CommerMethod(comp), MethodSpec(unique(f"untrained-k{cfg.num_embeddings}"),
                                                           "commer_untrained", cfg.num_embeddings))
                del comp
                gc.collect()
        if baselines:
            generator = generator_only(load_backbone(self.base, device=self.device))
            if "none" in baselines:
                self._score(NoPersonalization(generator), MethodSpec(unique("none"), "none", 0))
            if "raw_docs" in baselines:
                for b in budgets:
                    self._score(RawDocsMethod(generator, budget=b), MethodSpec(unique(f"raw-b{b}"), "raw_docs",
                                                                               None, b))
