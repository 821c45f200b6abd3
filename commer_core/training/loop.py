"""The training loop: one loop for both objectives, deterministic and resumable.

Determinism and resume: the data order is a pure function of (seed, step) (a seeded
permutation per epoch), the LoRA dropout draws from torch's global RNG, and the resume
state holds the trainables, the AdamW moments, every RNG state and the step. A run
interrupted and resumed on the same machine (CPU) ends bit for bit where an uninterrupted
run ends.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from commer_core.data.examples import Example
from commer_core.files import atomic_write_text, recover_dir
from commer_core.generator import Prefix
from commer_core.training.config import (
    BEST_DIR, CHECKPOINT_DIR, LOG_FILE, STATE_DIR, SUMMARY_FILE, TrainConfig, TrainingError,
)
from commer_core.training.dev import (
    baseline_perplexities, best_record, dev_check, dev_summary, is_better, swap_hinge,
)
from commer_core.training.doc_prediction import doc_prediction_loss, hold_out_documents
from commer_core.training.examples import PreparedExample, examples_digest, prepare_examples, sample_documents
from commer_core.training.method_checkpoints import build_method, save_method
from commer_core.training.methods import CommerMethod, Method
from commer_core.training.scoring import autocast
from commer_core.training.state import STATE_FILE, load_state, save_state

log = logging.getLogger(__name__)


def epoch_permutation(n: int, seed: int, epoch: int) -> list[int]:
    """The example order of one epoch: a pure function of (seed, epoch), not of any RNG state."""
    order = list(range(n))
    random.Random(f"commer-data-order/{seed}/{epoch}").shuffle(order)
    return order


class DataOrder:
    """Example indices of micro-batch ``m``: a flat stream of per-epoch permutations."""

    def __init__(self, n: int, seed: int, batch_size: int) -> None:
        if n < 1:
            raise TrainingError("no training examples")
        self.n, self.seed, self.batch_size = n, seed, batch_size
        self._cache: dict[int, list[int]] = {}

    def micro_batch(self, m: int) -> list[int]:
        out = []
        for q in range(m * self.batch_size, (m + 1) * self.batch_size):
            epoch, pos = divmod(q, self.n)
            if epoch not in self._cache:
                self._cache = {epoch: epoch_permutation(self.n, self.seed, epoch)}
            out.append(self._cache[epoch][pos])
        return out


@dataclass
class TrainResult:
    """What a call to :func:`train` did."""

    output_dir: Path
    steps_done: int
    total_steps: int
    completed: bool
    checkpoint: Path | None = None
    fingerprint: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    dev: dict[str, Any] = field(default_factory=dict)


def make_optimizer(method: Method, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the method's parameter groups; each group keeps its ``base_lr`` for the warmup."""
    groups = method.param_groups(config)
    for g in groups:
        g["base_lr"] = g["lr"]
    # foreach=False: the same arithmetic on every platform and thread count.
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay, foreach=False)


def lr_scale(step: int, warmup: int, total: int, decay: str = "none") -> float:
    """The factor on each group's base rate at 0-based ``step``: a linear warmup, then ``decay``.

    ``cosine`` falls from 1 after the warmup to 0 at step ``total``, so the last steps settle
    the weights instead of moving them at the full rate.
    """
    ramp = 1.0 if warmup <= 0 else min(1.0, (step + 1) / warmup)
    if decay == "none" or step < warmup:
        return ramp
    span = max(total - warmup, 1)
    return ramp * 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, span) / span))


def _step_token_count(method: Method, batch: Sequence[PreparedExample], prefixes: Sequence[Prefix]) -> int:
    """Tokens the step pushed through the model: documents (+k each) for ComMer, prefix + input + target."""
    n = 0
    if isinstance(method, CommerMethod):
        k = method.compressor.num_embeddings
        docs = [t for e in batch for t in e.documents]
        if docs:
            n += sum(len(d.ids) + k for d in method.compressor.tokenize(docs))
    n += sum(0 if p is None else int(p.shape[0]) for p in prefixes)
    ids = method.tokenizer([e.input + e.target for e in batch], add_special_tokens=False)["input_ids"]
    return n + sum(len(i) + 1 for i in ids)


class Trainer:
    """One run's method, optimizer and progress (step, tokens, time, history): what the resume state holds."""

    def __init__(self, config: TrainConfig, method: Method, train_set: list[PreparedExample],
                 dev_set: list[PreparedExample], output_dir: Path,
                 on_step: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.config, self.method, self.train_set, self.dev_set = config, method, train_set, dev_set
        self.output_dir, self.state_dir, self.on_step = output_dir, output_dir / STATE_DIR, on_step
        self.total = config.total_steps(len(train_set))
        self.optimizer = make_optimizer(method, config)
        self.params = [p for _, p in method.named_trainables()]
        self.data_id = examples_digest(train_set)[:16]
        self.order = DataOrder(len(train_set), config.seed, config.batch_size)
        self.step, self.tokens_seen, self.elapsed = 0, 0, 0.0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {}

    def resume(self) -> None:
        """Continue from ``state/`` when it exists; the options and the training data must be the run's."""
        if not (self.state_dir / STATE_FILE).exists():
            log.info("nothing to resume in %s: starting fresh", self.output_dir)
            return
        saved = load_state(self.state_dir, self.method, self.optimizer)
        current = self.config.to_dict()
        if saved["config"] != current:
            diff = sorted(k for k in current if saved["config"].get(k) != current[k])
            raise TrainingError(f"cannot resume {self.output_dir}: options differ from the interrupted run ({diff})")
        if saved["data"] != self.data_id:
            raise TrainingError(f"cannot resume {self.output_dir}: the training data changed since the interrupted run")
        self.step, self.tokens_seen, self.elapsed = saved["step"], saved["tokens_seen"], saved["elapsed_s"]
        self.history = saved["history"]
        self.best = best_record(self.history)
        log.info("resumed %s at step %d/%d", self.output_dir, self.step, self.total)

    def save_state(self) -> None:
        save_state(self.state_dir, self.method, self.optimizer, config=self.config, step=self.step, total=self.total,
                   tokens_seen=self.tokens_seen, elapsed=self.elapsed, history=self.history, data=self.data_id)

    def run(self, *, stop_after: int | None = None, progress: bool = True) -> None:
        """Optimizer steps until the total (or ``stop_after``); the state is saved on the way out, even on Ctrl-C."""
        bar = tqdm(total=self.total, initial=self.step, disable=not progress, desc="train", unit="step",
                   dynamic_ncols=True)
        try:
            while self.step < self.total and (stop_after is None or self.step < stop_after):
                record = self._optimizer_step()
                self._after_step(record, bar)
        except KeyboardInterrupt:
            bar.close()
            self.save_state()
            log.warning("interrupted at step %d/%d; state saved, continue with --resume", self.step, self.total)
            raise
        bar.close()
        self.save_state()

    def _optimizer_step(self) -> dict[str, Any]:
        """One step of ``grad_accum`` micro-batches; returns its log record."""
        config = self.config
        t0 = time.perf_counter()
        scale = lr_scale(self.step, config.warmup_steps, self.total, config.lr_decay)
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * scale
        self.optimizer.zero_grad(set_to_none=True)
        self.method.train()
        loss_sum, token_sum, step_tokens = 0.0, 0, 0
        for micro in range(config.grad_accum):
            nll_sum, n_tok, pushed = self._micro_batch(self.step * config.grad_accum + micro)
            loss_sum += nll_sum
            token_sum += n_tok
            step_tokens += pushed
        grad_norm = (float(torch.nn.utils.clip_grad_norm_(self.params, config.max_grad_norm))
                     if config.max_grad_norm > 0 else 0.0)
        self.optimizer.step()
        self.step += 1
        dt = time.perf_counter() - t0
        self.elapsed += dt
        self.tokens_seen += step_tokens
        return {"step": self.step, "loss": loss_sum / max(token_sum, 1), "grad_norm": grad_norm,
                "tokens": step_tokens, "tokens_per_s": step_tokens / max(dt, 1e-9), "lr_scale": scale}

    def _micro_batch(self, m: int) -> tuple[float, int, int]:
        """Forward and backward of micro-batch ``m``: (summed target NLL, target tokens, tokens pushed)."""
        config, method = self.config, self.method
        batch = sample_documents([self.train_set[i] for i in self.order.micro_batch(m)],
                                 config.min_docs_per_example, seed=config.seed, step=self.step)
        held_out: list[str | None] = []
        if config.doc_prediction_weight > 0:
            batch, held_out = hold_out_documents(batch, seed=config.seed, step=self.step)
        aux_tokens = 0
        with autocast(method.generator.device, config.bf16):
            prefixes = method.prefixes(batch)
            nll, counts = method.generator.target_nll(prefixes, [e.input for e in batch], [e.target for e in batch])
            n_tok = int(counts.sum())
            loss = nll.float().sum() / max(n_tok, 1)
            if config.swap_weight > 0:
                loss = loss + config.swap_weight * swap_hinge(method, batch, prefixes, nll, counts,
                                                             config.swap_margin, config.swap_partners,
                                                             nearest=config.swap_partner_choice == "nearest",
                                                             temperature=config.swap_temperature)
            if held_out:
                doc_loss, aux_tokens = doc_prediction_loss(
                    method, batch, prefixes, held_out, config.max_target_tokens, swap_weight=config.doc_swap_weight,
                    swap_margin=config.swap_margin, swap_partners=config.swap_partners,
                    swap_temperature=config.swap_temperature)
                loss = loss + config.doc_prediction_weight * doc_loss
        (loss / config.grad_accum).backward()
        return float(nll.detach().float().sum()), n_tok, _step_token_count(method, batch, prefixes) + aux_tokens

    def _after_step(self, record: dict[str, Any], bar: Any) -> None:
        """Dev check (and best checkpoint) when due, log the record, report it, save the state when due."""
        config, step = self.config, self.step
        if config.eval_every and step % config.eval_every == 0 and step < self.total and self.dev_set:
            record.update(dev_check(self.method, self.dev_set, config))
            if is_better(record, self.best):
                self.best = dev_summary(record)
                save_method(self.method, self.output_dir / BEST_DIR,
                            training={"step": step, "config": config.to_dict(), "dev": self.best})
        self.history.append(record)
        with open(self.output_dir / LOG_FILE, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        bar.update(1)
        bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_s']:.0f}",
                        **({"dev_ppl": f"{record['dev_perplexity']:.3f}"} if "dev_perplexity" in record else {}),
                        **({"dev_gap": f"{record['dev_gap']:.3f}"} if "dev_gap" in record else {}))
        if self.on_step is not None:
            self.on_step(record)
        if config.save_every and step % config.save_every == 0 and step < self.total:
            self.save_state()

    def result(self) -> TrainResult:
        return TrainResult(self.output_dir, self.step, self.total, self.step >= self.total, history=self.history)

    def finish(self, *, init_from: str | Path | None, shared_prompt_from: str | Path | None, compare_baselines: bool,
               extra_metadata: dict[str, Any] | None) -> TrainResult:
        """The final dev check, the checkpoint (with the run's metadata) and ``train_summary.json``."""
        dev, final = self._final_dev(compare_baselines)
        training = self._training_metadata(dev, final, init_from, shared_prompt_from, extra_metadata)
        self.method.eval()
        result = self.result()
        result.checkpoint = self.output_dir / CHECKPOINT_DIR
        result.fingerprint = save_method(self.method, result.checkpoint, training=training)
        result.dev = dev
        summary = {"checkpoint": str(result.checkpoint), "fingerprint": result.fingerprint, **training,
                   "dev_history": [dev_summary(h) for h in self.history if "dev_perplexity" in h]}
        atomic_write_text(self.output_dir / SUMMARY_FILE, json.dumps(summary, indent=2, sort_keys=True) + "\n")
        return result

    def _final_dev(self, compare_baselines: bool) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the checkpoint's ``dev_perplexity`` entry, the final dev check or {} without dev examples)."""
        config, dev_set = self.config, self.dev_set
        dev: dict[str, Any] = {"examples": len(dev_set), "docs_per_example": config.eval_docs,
                               "examples_digest": examples_digest(dev_set)}
        if not dev_set:
            return dev, {}
        final = dev_check(self.method, dev_set, config)
        dev["trained"] = final["dev_perplexity"]
        dev["personalization"] = {k: v for k, v in final.items() if k != "dev_perplexity"}
        if compare_baselines:
            dev.update(baseline_perplexities(config, self.method, dev_set))
        return dev, final

    def _training_metadata(self, dev: dict[str, Any], final: dict[str, Any], init_from: str | Path | None,
                           shared_prompt_from: str | Path | None,
                           extra_metadata: dict[str, Any] | None) -> dict[str, Any]:
        config = self.config
        return {
            "method": config.method,
            "objective": config.objective,
            "task": config.task,
            "steps": self.step,
            "examples_seen": self.step * config.batch_size * config.grad_accum,
            "train_examples": len(self.train_set),
            "tokens_seen": self.tokens_seen,
            "elapsed_s": round(self.elapsed, 1),
            "init_from": str(init_from) if init_from else None,
            "shared_prompt_from": str(shared_prompt_from) if shared_prompt_from else None,
            "optimizer": {"name": "AdamW", "weight_decay": config.weight_decay, "max_grad_norm": config.max_grad_norm,
                          "warmup_steps": config.warmup_steps, "lr_decay": config.lr_decay},
            "config": config.to_dict(),
            "dev_perplexity": dev,
            "final_train_loss": self.history[-1]["loss"] if self.history else None,
            "best_dev_check": best_record([*self.history, {"step": self.step, **final}]) if final else {},
            **(extra_metadata or {}),
        }


def train(
    config: TrainConfig,
    train_examples: Sequence[Example],
    dev_examples: Sequence[Example],
    output_dir: str | Path,
    *,
    resume: bool = False,
    init_from: str | Path | None = None,
    shared_prompt_from: str | Path | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    compare_baselines: bool = True,
    extra_metadata: dict[str, Any] | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train ``config.method`` on ``train_examples``; write state, log, summary and checkpoint.

    ``output_dir`` receives ``state/`` (resume state), ``train_log.jsonl``,
    ``train_summary.json`` and, at the end, ``checkpoint/``. ``resume`` continues
    from ``state/`` when it exists (the config must match). ``stop_after`` ends the
    call after that many total steps with the state saved, as an interruption would
    (tests use it). ``compare_baselines`` scores the untrained method and no
    personalization on the same dev examples at the end and records all three.
    ``init_from`` and ``shared_prompt_from`` are :func:`build_method`'s.
    """
    output_dir = Path(output_dir)
    recover_dir(output_dir / STATE_DIR)  # a state left aside by a crash mid-save counts as the run's
    if output_dir.exists() and ((output_dir / STATE_DIR).exists() or (output_dir / CHECKPOINT_DIR).exists()) \
            and not resume:
        raise TrainingError(f"{output_dir} already holds a training run; pass --resume to continue it or pick a new --output")
    output_dir.mkdir(parents=True, exist_ok=True)
    method = build_method(config, init_from=init_from, shared_prompt_from=shared_prompt_from)
    prep = dict(selection=config.selection, seed=config.seed, max_input_tokens=config.max_input_tokens,
                max_target_tokens=config.max_target_tokens)
    train_set = prepare_examples(train_examples, method.tokenizer, n_docs=config.docs_per_example, **prep)
    dev_set = prepare_examples(dev_examples, method.tokenizer, n_docs=config.eval_docs, **prep)[: config.max_dev_examples]
    if not train_set:
        raise TrainingError("no labelled training examples")
    trainer = Trainer(config, method, train_set, dev_set, output_dir, on_step=on_step)
    if resume:
        trainer.resume()
    trainer.run(stop_after=stop_after, progress=progress)
    if trainer.step < trainer.total:
        return trainer.result()
    return trainer.finish(init_from=init_from, shared_prompt_from=shared_prompt_from,
                          compare_baselines=compare_baselines, extra_metadata=extra_metadata)
