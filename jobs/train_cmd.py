"""``commer-pipeline train``: train a ComMer compressor (or the prompt-tuning baseline)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from commer_core.config import (
    DEFAULT_BASE_MODEL, DEFAULT_PROMPT_POSITION, LR_DECAYS, PROMPT_NORMS, PROMPT_POSITIONS, SWAP_PARTNER_CHOICES,
    LoraSettings,
)
from jobs.common_options import bf16_option
from jobs.errors import cli_errors

_LORA = LoraSettings()  # the LoRA defaults, written once (TrainConfig takes the same)
# Options that name a TrainConfig field differently; every other option of the config part is the field's name.
_CONFIG_FIELDS = {"min_docs": "min_docs_per_example", "lora_targets": "target_modules", "raw_budget": "raw_doc_budget"}


def _module_list(value: str) -> tuple[str, ...]:
    """``"q_proj, v_proj"`` -> ``("q_proj", "v_proj")``."""
    return tuple(t.strip() for t in value.split(",") if t.strip())


def _load_task_data(data: Path) -> tuple[list, list]:
    """(train, dev) examples from any layout ``commer_core.data.sources`` reads."""
    from commer_core.data.sources import load_train_dev

    train, dev = load_train_dev(data)
    if not dev:
        click.echo(f"warning: {data} has no dev split or it is empty: no dev evaluation", err=True)
    return train, dev or []


@click.command("train")
@click.option("--task", type=click.Choice(["lamp4", "lamp7", "perltqa", "text"], case_sensitive=False),
              default=None, help="Dataset the examples come from (recorded in the checkpoint).")
@click.option("--data", required=True, type=click.Path(exists=True, path_type=Path),
              help="objective task: a `prepare` output folder (train.parquet, dev.parquet), an examples .parquet "
                   "file, or a Hugging Face dataset with the same columns: a `save_to_disk` folder or a folder of "
                   "Parquet files (train and dev/validation splits). "
                   "objective autoencode: a text corpus (Parquet with a text column, JSON lines, .txt, or a folder).")
@click.option("--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder: state/ (resume), train_log.jsonl, train_summary.json, checkpoint/.")
@click.option("--objective", type=click.Choice(["task", "autoencode"]), default="task", show_default=True)
@click.option("--method", type=click.Choice(["commer", "prompt_tuning"]), default="commer", show_default=True)
@click.option("--base-model", default=DEFAULT_BASE_MODEL, show_default=True,
              help="Built-in name, local model folder or hub id of the frozen backbone.")
@click.option("--num-embeddings", "-k", default=16, show_default=True,
              help="k: compression embeddings (ComMer) or soft tokens (prompt tuning).")
@click.option("--docs-per-example", default=8, show_default=True, help="Documents per training example.")
@click.option("--min-docs", type=int, default=None,
              help="Each training example reads a random number of its documents, from this many to "
                   "--docs-per-example, so the mean merge is trained as it is served [default: all of them].")
@click.option("--prompt-position", type=click.Choice(list(PROMPT_POSITIONS)), default=DEFAULT_PROMPT_POSITION,
              show_default=True, help="Chat backbones: the prompt inside the user turn, before the input ('turn'), "
                                      "or before the whole chat text ('start', where the first token's attention-sink "
                                      "role makes it hard to read).")
@click.option("--prompt-norm", type=click.Choice(list(PROMPT_NORMS)), default="rms", show_default=True,
              help="ComMer: RMS-normalise compression rows times a learned gain (starts at the token "
                   "embeddings' scale); 'center' first subtracts a running mean of the rows and adds a "
                   "learned bias; 'vocab' turns each row into the mixture of token embeddings the model "
                   "predicts there (learned temperature); 'none' feeds final-layer states as they are.")
@click.option("--swap-weight", default=0.0, show_default=True,
              help="Weight of the swap hinge: pays when another user's prompt scores this user's target "
                   "within --swap-margin nats/token of the user's own (0: off).")
@click.option("--swap-margin", default=1.0, show_default=True, help="Margin of the swap hinge, nats per token.")
@click.option("--swap-temperature", default=0.0, show_default=True,
              help="0: the swap hinge. T > 0: its smooth form T*softplus((margin - gap)/T), which pulls hardest "
                   "on the examples another user's prompt wins (measured with a margin of 0.3-0.5 and T of "
                   "0.1-0.15: lower perplexity, a smaller gap; docs/RESULTS.md session 21).")
@click.option("--swap-partners", default=1, show_default=True,
              help="Other batch users each example's target is scored against in the swap hinge "
                   "(one generator pass each; up to --batch-size - 1 distinct).")
@click.option("--swap-partner-choice", type=click.Choice(list(SWAP_PARTNER_CHOICES)), default="cyclic",
              show_default=True,
              help="Which other batch users the swap hinge scores against: the next ones in batch order "
                   "('cyclic') or those whose prompts are closest to the example's own ('nearest': the "
                   "users hardest to tell apart; use a --batch-size above --swap-partners + 1).")
@click.option("--doc-prediction-weight", default=0.0, show_default=True,
              help="ComMer: each training example leaves one of its documents out of the prompt and also "
                   "predicts it from the others' merged prompt, at this weight (0: off); pays for what "
                   "recurs in a user's documents.")
@click.option("--doc-swap-weight", default=0.0, show_default=True,
              help="With --doc-prediction-weight: the swap hinge on the held-out documents as well (another "
                   "batch user's prompt must predict them worse by --swap-margin), at this weight within that "
                   "term (0: off); a new contrastive target every step instead of the task's one per example "
                   "(measured at 5: a larger gap, a higher perplexity; docs/RESULTS.md session 22).")
@click.option("--dev-docs", type=int, default=None, help="Documents per dev example [default: --docs-per-example].")
@click.option("--selection", type=click.Choice(["bm25", "random", "recent"]), default="bm25", show_default=True)
@click.option("--merge", type=click.Choice(["mean", "concat"]), default="mean", show_default=True,
              help="ComMer merge of a user's compressions (concat is the paper's ablation).")
@click.option("--lora-r", type=int, default=_LORA.r, show_default=True)
@click.option("--lora-alpha", type=int, default=_LORA.alpha, show_default=True)
@click.option("--lora-dropout", type=float, default=_LORA.dropout, show_default=True)
@click.option("--lora-targets", default=",".join(_LORA.target_modules), show_default=True,
              callback=lambda _ctx, _param, value: _module_list(value),
              help="Comma-separated module names that get a LoRA.")
@click.option("--max-doc-tokens", default=512, show_default=True, help="Documents are cut to this many tokens.")
@click.option("--max-input-tokens", default=256, show_default=True)
@click.option("--max-target-tokens", default=64, show_default=True)
@click.option("--raw-budget", default=512, show_default=True,
              help="Prompt tuning: token budget of the raw documents after the soft tokens.")
@click.option("--steps", type=int, default=None, help="Optimizer steps (or give --epochs; default 1 epoch).")
@click.option("--epochs", type=float, default=None)
@click.option("--batch-size", default=8, show_default=True)
@click.option("--grad-accum", default=1, show_default=True, help="Micro-batches per optimizer step.")
@click.option("--lr-lora", default=1e-4, show_default=True)
@click.option("--lr-embeddings", default=1e-2, show_default=True)
@click.option("--lr-prompt", default=3e-2, show_default=True, help="Prompt-tuning soft tokens.")
@click.option("--warmup-steps", default=0, show_default=True)
@click.option("--lr-decay", type=click.Choice(list(LR_DECAYS)), default="none", show_default=True,
              help="After the warmup: constant rates, or a cosine from the base rates to 0 at the last step.")
@click.option("--weight-decay", default=0.0, show_default=True)
@click.option("--max-grad-norm", default=1.0, show_default=True, help="Gradient clipping (0: off).")
@bf16_option
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--resume", is_flag=True, help="Continue the run in --output from its saved state.")
@click.option("--seed", default=0, show_default=True)
@click.option("--init-from", type=click.Path(exists=True, file_okay=False), default=None,
              help="Initialise from a checkpoint (e.g. an autoencode pretraining run's checkpoint/).")
@click.option("--shared-prompt-from", type=click.Path(exists=True, file_okay=False), default=None,
              help="ComMer with --prompt-norm center: start the prompt's shared part (the bias every user "
                   "gets) from a prompt-tuning checkpoint with the same -k and --raw-budget 0.")
@click.option("--freeze-shared-prompt", is_flag=True,
              help="ComMer with --prompt-norm center: keep the shared part fixed (e.g. at --shared-prompt-from's "
                   "prompt) and train only what differs between users.")
@click.option("--eval-every", default=0, show_default=True, help="Dev perplexity every N steps (0: at the end only).")
@click.option("--max-dev-examples", default=64, show_default=True)
@click.option("--save-every", default=50, show_default=True, help="Resume state every N steps (and at the end).")
@click.option("--compare-baselines/--no-compare-baselines", default=True, show_default=True,
              help="At the end, also score the untrained method and no personalization on dev.")
@click.option("--ae-examples", type=int, default=None,
              help="autoencode: training examples to draw [default: one per corpus document].")
@click.option("--ae-dev-examples", default=64, show_default=True)
@click.option("--ae-dev-fraction", default=0.05, show_default=True, help="autoencode: corpus share held out for dev.")
@click.option("--threads", type=int, default=None,
              help="torch CPU threads [default: torch's choice]. Use 1 when other jobs share the cores: "
                   "oversubscribed threads slow CPU training by an order of magnitude.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@cli_errors
def train(data: Path, output: Path, resume: bool, init_from: str | None, shared_prompt_from: str | None,
          progress: bool, threads: int | None,
          compare_baselines: bool, ae_examples: int | None, ae_dev_examples: int, ae_dev_fraction: float,
          **options: Any) -> None:
    """Train compression embeddings + LoRA (or prompt-tuning soft tokens) end to end on a frozen LLM."""
    from commer_core.training import TrainConfig
    from commer_core.training import train as run_train

    if threads:
        import torch

        torch.set_num_threads(threads)
    objective = options["objective"]
    if objective == "autoencode":
        options["selection"] = "first"
    try:
        # The remaining options are TrainConfig's fields, already typed by click.
        config = TrainConfig(**{_CONFIG_FIELDS.get(name, name): value for name, value in options.items()})
        extra: dict[str, Any] = {"data": str(data)}
        if objective == "autoencode":
            from commer_core.pretraining import autoencode_splits

            train_examples, dev_examples = autoencode_splits(
                data, max_docs=config.docs_per_example, n_train=ae_examples, n_dev=ae_dev_examples,
                dev_fraction=ae_dev_fraction, seed=config.seed)
            extra["autoencode"] = {"train_examples": len(train_examples), "dev_examples": len(dev_examples),
                                   "dev_fraction": ae_dev_fraction}
        else:
            train_examples, dev_examples = _load_task_data(data)
        result = run_train(config, train_examples, dev_examples, output, resume=resume, init_from=init_from,
                           shared_prompt_from=shared_prompt_from, progress=progress,
                           compare_baselines=compare_baselines, extra_metadata=extra)
    except KeyboardInterrupt:
        raise click.ClickException(f"interrupted; state saved in {output / 'state'}: rerun with --resume") from None
    click.echo(json.dumps({"checkpoint": str(result.checkpoint), "fingerprint": result.fingerprint,
                           "steps": result.steps_done, "dev_perplexity": result.dev}, indent=2))
