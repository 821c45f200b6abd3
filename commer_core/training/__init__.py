"""Training ComMer and its baselines: methods, objectives, and a resumable, deterministic loop.

Objectives: ``task`` (examples from ``prepare``) and ``autoencode`` (the paper's multi-document
autoencoding pretraining, built by :mod:`commer_core.pretraining`); both are plain
:class:`~commer_core.data.Example` lists, so one loop trains both.

Modules by concern:

- :mod:`.config`: :class:`TrainConfig`, :class:`TrainingError`, the run folder's names
- :mod:`.examples`: examples as the model sees them (selection, truncation, digest)
- :mod:`.methods`: how documents reach the frozen generator (ComMer and the baselines)
- :mod:`.scoring`: NLL per example, perplexity
- :mod:`.method_checkpoints`: a method from a config or a checkpoint; saving a trained one
- :mod:`.dev`: dev checks, the best one, the swap hinge
- :mod:`.state`: the resume state (safetensors + JSON, nothing pickled)
- :mod:`.loop`: :func:`train`
"""

from commer_core.training.config import (
    BEST_DIR,
    CHECKPOINT_DIR,
    METHOD_FILE,
    OBJECTIVES,
    PROMPT_FILE,
    SELECTIONS,
    STATE_DIR,
    TRAINABLE_METHODS,
    TrainConfig,
    TrainingError,
)
from commer_core.training.dev import best_record, dev_check, swap_hinge, swap_partners
from commer_core.training.examples import PreparedExample, examples_digest, prepare_examples, sample_documents
from commer_core.training.loop import DataOrder, TrainResult, Trainer, epoch_permutation, make_optimizer, train
from commer_core.training.method_checkpoints import (
    build_method,
    checkpoint_info,
    load_method,
    resolve_checkpoint_dir,
    save_method,
    seed_everything,
)
from commer_core.training.methods import (
    CommerMethod,
    Method,
    NoPersonalization,
    PromptTuningMethod,
    RawDocsMethod,
    generator_only,
)
from commer_core.training.scoring import autocast, batches, corpus_perplexity, perplexity, score_examples
from commer_core.training.state import load_state, save_state

__all__ = [
    "BEST_DIR", "CHECKPOINT_DIR", "METHOD_FILE", "OBJECTIVES", "PROMPT_FILE", "SELECTIONS", "STATE_DIR",
    "TRAINABLE_METHODS", "CommerMethod", "DataOrder", "Method", "NoPersonalization", "PreparedExample",
    "PromptTuningMethod", "RawDocsMethod", "TrainConfig", "TrainResult", "Trainer", "TrainingError", "autocast",
    "batches", "best_record", "build_method", "checkpoint_info", "corpus_perplexity", "dev_check", "epoch_permutation",
    "examples_digest", "generator_only", "load_method", "load_state", "make_optimizer", "perplexity",
    "prepare_examples", "resolve_checkpoint_dir", "sample_documents", "save_method", "save_state", "score_examples",
    "seed_everything", "swap_hinge", "swap_partners", "train",
]
