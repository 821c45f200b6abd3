"""RunInference around the ComMer compressor: tokens in, one k x d compression per document out.

The pieces, in the order a document meets them:

* :class:`TokenizeDocs` turns validated documents, a batch of up to ``TOKENIZE_BATCH`` at a
  time, into ``((user_id, doc_id, sha256), token_ids)`` each, with the compressor's own
  truncation rule (``commer_core.compressor.tokenize_documents``), counting truncations
  and the token-length distribution.
* :class:`CompressDocuments` batches by *token budget*: :class:`SortAndBatchByTokens`
  cuts windows of up to ``sort_window`` documents with the compressor's own policy
  (``commer_core.compressor.plan_batches``: sorted by padded length ``len(ids) + k``, at
  most ``batch_tokens`` tokens, little padding), so a batch of short documents is wide, a
  batch of long ones is narrow. It then applies
  ``RunInference`` with the handler's ``with_no_batching()`` form. (Beam's own
  ``SortAndBatchElements`` buffers a whole bundle, and an in-process runner's bundle
  can be the whole input: memory grew with the corpus. Beam 2.77's
  ``ModelHandler(max_batch_weight=...)`` forwards that argument to ``BatchElements``,
  which rejects it with a TypeError, so batching is applied explicitly.)
* :class:`CompressorModelHandler` loads the checkpoint once per worker process (RunInference
  keeps it in a per-process ``Shared`` handle), sets torch's thread count to
  cores // processes, uses CUDA + bf16 when asked and present, runs under
  ``torch.inference_mode`` and returns plain ``float32`` numpy arrays keyed like the input,
  so outputs cross process boundaries cheaply (also with ``large_model=True`` sharing).

Nothing here imports transformers or the model code (``commer_core.backbone``) at module
import time: workers pay that cost once, in ``setup``/``load_model``. torch itself is
imported with this module all the same, by Beam: ``apache_beam.ml.inference.base`` imports
``model_manager``, which imports torch unconditionally (Beam 2.77).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Optional

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, RunInference
from apache_beam.transforms.window import GlobalWindows

from commer_core.defaults import default_batch_tokens, default_max_batch_size
from commer_core.files import is_local_uri, local_path, publish_dir, staging_dir
from pipelines.validate import DEAD_LETTER_TAG, METRICS_NAMESPACE, CorpusDoc
from schemas import dead_letter_row

log = logging.getLogger(__name__)

#: ``(user_id, doc_id, text_sha256)``: the key a document carries through inference.
DocKey = tuple[str, str, str]
KeyedTokens = tuple[DocKey, list[int]]
KeyedCompression = tuple[DocKey, np.ndarray]


def quiet_transformers() -> None:
    """:func:`commer_core.backbone.quiet_transformers`, imported when called (that module imports transformers)."""
    from commer_core.backbone import quiet_transformers as quiet

    quiet()


# -- checkpoints on any Beam filesystem ---------------------------------------------------
#: A file every complete checkpoint directory holds (``commer_core.checkpoint.CHECKSUMS_FILE``,
#: not imported: that module imports torch).
CHECKPOINT_MARKER = "checksums.json"


def materialize_checkpoint(uri: str, expected_fingerprint: str | None = None) -> Path:
    """A local directory holding the checkpoint at ``uri`` (local path, gs://, s3://, ...).

    Local directories are used in place. Remote ones are copied once per machine into
    ``$COMMER_HOME/checkpoints/<fingerprint-or-uri-hash>`` (built in a staging directory
    beside it, then published by one rename: concurrent worker processes keep whichever
    complete copy landed first). Integrity is checked by the caller with
    ``commer_core.checkpoint.verify``.
    """
    if is_local_uri(uri):
        return local_path(uri)
    from apache_beam.io.filesystems import FileSystems

    from commer_core.backbone import commer_home

    tag = expected_fingerprint or hashlib.sha256(uri.encode()).hexdigest()
    target = commer_home() / "checkpoints" / tag[:32]
    if (target / CHECKPOINT_MARKER).exists():
        return target
    root = uri.rstrip("/")
    matches = FileSystems.match([root + "/**"])[0].metadata_list
    if not matches:
        raise FileNotFoundError(f"no checkpoint files under {uri}")
    with staging_dir(target) as staging:
        for meta in matches:
            relative = meta.path[len(root) + 1:]
            dest = staging / relative
            dest.parent.mkdir(parents=True, exist_ok=True)
            with FileSystems.open(meta.path) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out)
        publish_dir(staging, target, marker=CHECKPOINT_MARKER)
    return target


# -- tokenization -------------------------------------------------------------------------
TOKENIZE_BATCH = 256  # documents per tokenizer call (see TokenizeDocs)
_TOKENIZERS: dict[str, Any] = {}
_TOKENIZERS_LOCK = threading.Lock()


def worker_tokenizer(base_model: str) -> Any:
    """The base model's tokenizer, loaded once per process."""
    with _TOKENIZERS_LOCK:
        if base_model not in _TOKENIZERS:
            quiet_transformers()
            from commer_core.backbone import load_base_tokenizer

            _TOKENIZERS[base_model] = load_base_tokenizer(base_model)
        return _TOKENIZERS[base_model]


class TokenizeDocs(beam.DoFn):
    """A batch of CorpusDocs -> one ``((user_id, doc_id, text_sha256), token_ids)`` each; truncates at ``max_doc_tokens``.

    Takes batches (``beam.BatchElements`` before it) because the tokenizer's per-call
    overhead is as large as its work on a tweet: one call per 256 documents halves the
    step's time (and runs the Rust tokenizer's threads). A batch the tokenizer rejects is
    retried one document at a time, so one odd text is dead-lettered (stage ``tokenize``)
    alone; so is a text that yields no token. Counts truncations and the token lengths.
    """

    def __init__(self, base_model: str, max_doc_tokens: int):
        if max_doc_tokens < 1:
            raise ValueError(f"max_doc_tokens must be >= 1, got {max_doc_tokens}")
        self._base_model = base_model
        self._max_doc_tokens = max_doc_tokens
        self._truncated = Metrics.counter(METRICS_NAMESPACE, "truncated")
        self._doc_tokens = Metrics.distribution(METRICS_NAMESPACE, "doc_tokens")
        self._tokenizer = None

    def setup(self) -> None:
        self._tokenizer = worker_tokenizer(self._base_model)

    def process(self, docs: Sequence[CorpusDoc]) -> Iterable[Any]:
        from commer_core.compressor import tokenize_documents

        try:
            tokenized = tokenize_documents(self._tokenizer, [doc.text for doc in docs], self._max_doc_tokens)
        except Exception as exc:  # a tokenizer failure on one odd text must not fail the job
            if len(docs) > 1:  # find the failing text: the others must still pass
                for doc in docs:
                    yield from self.process([doc])
                return
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER_TAG,
                dead_letter_row(docs[0]._asdict(), f"tokenizer failed: {type(exc).__name__}: {exc}", "tokenize",
                                docs[0].source),
            )
            return
        for doc, tokens in zip(docs, tokenized):
            yield from self._emit(doc, tokens)

    def _emit(self, doc: CorpusDoc, tokens: Any) -> Iterable[Any]:
        if not tokens.ids:
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER_TAG, dead_letter_row(doc._asdict(), "text produced no tokens", "tokenize", doc.source)
            )
            return
        if tokens.truncated:
            self._truncated.inc()
        self._doc_tokens.update(len(tokens.ids))
        yield doc.key(), list(tokens.ids)


# -- the model ------------------------------------------------------------------------------
class LoadedCompressor:
    """What ``load_model`` returns: a compressor behind plain method calls.

    Weak-referenceable (RunInference's ``Shared`` cache requires it) and usable through a
    cross-process proxy when the model is shared (``large_model=True``): callers only call
    methods and get numpy arrays back.
    """

    def __init__(self, compressor: Any, *, batch_tokens: int, max_batch_size: int):
        self._compressor = compressor
        self._batch_tokens = batch_tokens
        self._max_batch_size = max_batch_size

    def compress(self, token_ids: Sequence[Sequence[int]]) -> np.ndarray:
        """``(n, k, d)`` float32 compressions, rows in input order."""
        import torch

        with torch.inference_mode():
            out = self._compressor.compress_tokenized(
                token_ids, batch_tokens=self._batch_tokens, max_batch_size=self._max_batch_size
            )
        return out.numpy()

    def shape(self) -> tuple[int, int]:
        return self._compressor.num_embeddings, self._compressor.hidden_size


def threads_for(processes_per_worker: int | None, cores: int | None = None) -> int:
    """torch threads per process: cores // processes (one per core when processes is None)."""
    cores = cores or os.cpu_count() or 1
    if processes_per_worker is None:
        return 1
    return max(1, cores // max(1, processes_per_worker))


class CompressorModelHandler(ModelHandler[KeyedTokens, KeyedCompression, LoadedCompressor]):
    """Keyed ``(doc key, token_ids)`` -> ``(doc key, float32[k, d])``.

    Args:
      checkpoint: checkpoint directory (local path or any Beam filesystem URI).
      num_embeddings: k of the checkpoint (used to weigh elements before the model loads).
      fingerprint: expected checkpoint fingerprint; the worker refuses a different one.
      base_model: backbone to load instead of the one named in the checkpoint (its weights
        must still match the checkpoint's).
      device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``; CUDA runs in bf16.
      batch_tokens: padded-token budget of one forward pass (None: :func:`default_batch_tokens`).
      max_batch_size: most documents in one forward pass (None: :func:`default_max_batch_size`).
      processes_per_worker: SDK processes sharing the machine's cores (None: one per core).
      large_model: share one model between a worker's processes (Beam's ``large_model``).
      compile_model: ``torch.compile`` the decoder layers after loading (see
        :meth:`Compressor.compile_layers`): faster steady state for a start-up cost.
      device_class: ``cpu`` or ``cuda`` as the run's compression key records it; a worker
        whose device (or compute dtype) differs refuses to compute (None: no check).
    """

    def __init__(
        self,
        checkpoint: str,
        *,
        num_embeddings: int,
        fingerprint: str | None = None,
        base_model: str | None = None,
        device: str = "auto",
        batch_tokens: int | None = None,
        max_batch_size: int | None = None,
        processes_per_worker: int | None = 1,
        large_model: bool = False,
        compile_model: bool = False,
        device_class: str | None = None,
    ):
        batch_tokens = default_batch_tokens(device) if batch_tokens is None else batch_tokens
        max_batch_size = default_max_batch_size(device) if max_batch_size is None else max_batch_size
        if batch_tokens < 1 or max_batch_size < 1 or num_embeddings < 1:
            raise ValueError("batch_tokens, max_batch_size and num_embeddings must be >= 1")
        if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
        # Plain RunInference (without CompressDocuments) still batches by token weight.
        super().__init__(
            min_batch_size=batch_tokens,
            max_batch_size=batch_tokens,
            element_size_fn=self.element_size,
            large_model=large_model,
        )
        self.checkpoint = checkpoint
        self.num_embeddings = num_embeddings
        self.fingerprint = fingerprint
        self.base_model = base_model
        self.device = device
        self.batch_tokens = batch_tokens
        self.max_batch_size = max_batch_size
        self.processes_per_worker = processes_per_worker
        self.compile_model = compile_model
        self.device_class = device_class

    def element_size(self, element: KeyedTokens) -> int:
        """Weight of one document in a batch: its padded width, ``len(ids) + k``."""
        return len(element[1]) + self.num_embeddings

    def load_model(self) -> LoadedCompressor:
        import torch

        from commer_core.backbone import load_backbone, resolve_device
        from commer_core.checkpoint import CheckpointError, fingerprint, load_checkpoint, read_config

        quiet_transformers()
        torch.set_num_threads(threads_for(self.processes_per_worker))
        device = resolve_device(self.device)
        if self.device_class is not None and device.type != self.device_class:
            raise ValueError(
                f"this worker computes on {device.type}, but the run's compression key says {self.device_class} "
                "(decided at launch): pass --device cpu or --device cuda explicitly"
            )
        path = materialize_checkpoint(self.checkpoint, self.fingerprint)
        actual = fingerprint(path)
        if self.fingerprint is not None and actual != self.fingerprint:
            raise CheckpointError(
                f"checkpoint {self.checkpoint} changed since the job started "
                f"(fingerprint {actual[:12]}..., expected {self.fingerprint[:12]}...)"
            )
        backbone = None
        if self.base_model and self.base_model != read_config(path)["base_model"]["name"]:
            backbone = load_backbone(self.base_model, device=device)
        compressor = load_checkpoint(path, backbone, device=device)
        expected_dtype = {"cpu": torch.float32, "cuda": torch.bfloat16}.get(self.device_class or "")
        if expected_dtype is not None and compressor.backbone.dtype != expected_dtype:
            raise ValueError(f"the backbone loaded in {compressor.backbone.dtype}, but the run's compression key "
                             f"says {expected_dtype}")
        compressor.merge_lora()  # workers only compress: fold the LoRA in (about 15% faster on CPU)
        if self.compile_model:
            compressor.compile_layers()
        log.info(
            "loaded compressor %s on %s (%s), %d torch threads, %d tokens and at most %d documents per forward "
            "pass, %s, pid %d",
            actual[:12], device, compressor.backbone.dtype, torch.get_num_threads(), self.batch_tokens,
            self.max_batch_size, "layers compiled" if self.compile_model else "eager", os.getpid(),
        )
        return LoadedCompressor(compressor, batch_tokens=self.batch_tokens, max_batch_size=self.max_batch_size)

    def run_inference(
        self,
        batch: Sequence[KeyedTokens],
        model: LoadedCompressor,
        inference_args: Optional[dict[str, Any]] = None,
    ) -> Iterable[KeyedCompression]:
        if not batch:
            return []
        keys = [key for key, _ in batch]
        out = model.compress([list(ids) for _, ids in batch])
        return [(key, out[i]) for i, key in enumerate(keys)]

    def get_num_bytes(self, batch: Sequence[KeyedTokens]) -> int:
        return sum(len(ids) for _, ids in batch) * 8

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE

    def validate_inference_args(self, inference_args: Optional[dict[str, Any]]) -> None:
        if inference_args:
            raise ValueError(f"CompressorModelHandler takes no inference_args (got {sorted(inference_args)})")


class SortAndBatchByTokens(beam.DoFn):
    """Keyed tokens -> lists of them, cut by :func:`commer_core.compressor.plan_batches` within
    windows of ``sort_window`` elements.

    The one batching policy of the job: the compressor's own (sorted by padded width, at
    most ``max_batch_size`` documents and ``max_batch_weight`` padded tokens, padding at
    most 10%), so the batches RunInference hands the model are the ones it computes
    (``compress_tokenized`` re-plans each into itself). Memory is bounded by the window,
    whatever the bundle size. Batch pipelines only (global window).
    """

    def __init__(self, max_batch_size: int, max_batch_weight: int, element_size_fn: Any, sort_window: int = 4096):
        if max_batch_size < 1 or max_batch_weight < 1 or sort_window < 1:
            raise ValueError("max_batch_size, max_batch_weight and sort_window must be >= 1")
        self._max_size, self._max_weight = max_batch_size, max_batch_weight
        self._size_fn, self._window = element_size_fn, sort_window
        self._buffer: list[Any] = []

    def start_bundle(self) -> None:
        self._buffer = []

    def process(self, element: Any) -> Iterable[list[Any]]:
        self._buffer.append(element)
        if len(self._buffer) >= self._window:
            yield from self._flush()

    def finish_bundle(self) -> Iterable[Any]:
        for batch in self._flush():
            yield GlobalWindows.windowed_value(batch)

    def _flush(self) -> Iterable[list[Any]]:
        from commer_core.compressor import plan_batches

        items, self._buffer = self._buffer, []
        widths = [self._size_fn(item) for item in items]  # padded widths already: k = 0 below
        for batch in plan_batches(widths, 0, self._max_weight, self._max_size):
            yield [items[i] for i in batch]


class CompressDocuments(beam.PTransform):
    """``(doc key, token_ids)`` -> ``(doc key, float32[k, d])``.

    Sort-and-batch by padded token count (:class:`SortAndBatchByTokens`), then
    ``RunInference`` on the pre-batched elements.
    """

    def __init__(self, handler: CompressorModelHandler):
        super().__init__()
        self._handler = handler

    def expand(self, keyed_tokens: beam.PCollection) -> beam.PCollection:
        handler = self._handler
        return (
            keyed_tokens
            | "SortAndBatchByTokens" >> beam.ParDo(
                SortAndBatchByTokens(handler.max_batch_size, handler.batch_tokens, handler.element_size)
            )
            | "RunInference" >> RunInference(handler.with_no_batching())
        )
