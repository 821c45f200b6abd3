"""pipelines/model_handler.py: tokenization, the ModelHandler, token-budget batching, CompressDocuments.

The model is a tiny-random checkpoint (2 layers, d=64) whose LoRA is randomised so that
loading the adapter is actually exercised; pipelines run on small in-memory inputs with
TestPipeline + assert_that.
"""

from __future__ import annotations

import weakref

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.validate import CorpusDoc


def test_model_handler_matches_commer_core(tiny_checkpoint):
    from commer_core.checkpoint import fingerprint, load_checkpoint
    from pipelines.model_handler import CompressorModelHandler, LoadedCompressor

    handler = CompressorModelHandler(
        str(tiny_checkpoint), num_embeddings=4, fingerprint=fingerprint(tiny_checkpoint), device="cpu",
        batch_tokens=64, max_batch_size=3,
    )
    model = handler.load_model()
    assert isinstance(model, LoadedCompressor)
    weakref.ref(model)  # TypeError unless weak-referenceable: RunInference's Shared cache holds it weakly
    assert model.shape() == (4, 64)
    batch = [(("u1", "d1"), [5, 6, 7]), (("u1", "d2"), list(range(10, 30))), (("u2", "d1"), [9])]
    out = handler.run_inference(batch, model)
    assert [key for key, _ in out] == [key for key, _ in batch]
    assert all(isinstance(x, np.ndarray) and x.dtype == np.float32 and x.shape == (4, 64) for _, x in out)
    reference = load_checkpoint(tiny_checkpoint).compress_tokenized([ids for _, ids in batch])
    for (_, x), ref in zip(out, reference.numpy()):
        np.testing.assert_allclose(x, ref, atol=1e-5)
    assert handler.element_size(batch[1]) == 20 + 4
    assert handler.get_num_bytes(batch) == (3 + 20 + 1) * 8


def test_model_handler_refuses_a_changed_checkpoint(tiny_checkpoint):
    from commer_core.checkpoint import CheckpointError
    from pipelines.model_handler import CompressorModelHandler

    handler = CompressorModelHandler(str(tiny_checkpoint), num_embeddings=4, fingerprint="0" * 64, device="cpu")
    with pytest.raises(CheckpointError, match="changed since the job started"):
        handler.load_model()


def test_compress_documents_batches_by_tokens_and_keeps_keys(tiny_checkpoint):
    from commer_core.checkpoint import fingerprint, load_checkpoint
    from pipelines.model_handler import CompressDocuments, CompressorModelHandler

    rng = np.random.default_rng(2)
    elements = [((f"u{i % 3}", f"d{i}"), rng.integers(10, 1000, size=int(n)).tolist())
                for i, n in enumerate(rng.integers(1, 24, size=20))]
    reference = load_checkpoint(tiny_checkpoint).compress_tokenized([ids for _, ids in elements]).numpy()
    expected = [(key, ref) for (key, _), ref in zip(elements, reference)]
    handler = CompressorModelHandler(
        str(tiny_checkpoint), num_embeddings=4, fingerprint=fingerprint(tiny_checkpoint), device="cpu",
        batch_tokens=60, max_batch_size=4,
    )
    with BeamTestPipeline() as p:
        out = p | beam.Create(elements) | "Compress" >> CompressDocuments(handler)
        assert_that(
            out,
            equal_to(expected, equals_fn=lambda e, a: e[0] == a[0] and np.allclose(e[1], a[1], atol=1e-5)),
        )


def test_threads_split_cores_between_processes():
    from pipelines.model_handler import threads_for

    assert threads_for(1, cores=8) == 8
    assert threads_for(2, cores=8) == 4
    assert threads_for(16, cores=8) == 1
    assert threads_for(None, cores=8) == 1  # one SDK process per core (Dataflow's default)


def test_beam_modelhandler_max_batch_weight_is_still_broken_in_this_beam():
    """Why CompressDocuments batches before RunInference itself (remove when Beam fixes it)."""
    from apache_beam.ml.inference.base import ModelHandler, RunInference

    class _Handler(ModelHandler):
        def load_model(self):
            return object()

        def run_inference(self, batch, model, inference_args=None):
            return batch

    with pytest.raises(TypeError, match="max_batch_weight"):
        with BeamTestPipeline() as p:
            _ = p | beam.Create(["a"]) | RunInference(_Handler(max_batch_weight=10, element_size_fn=len))


def test_sort_and_batch_by_tokens_bounds_batches_and_its_buffer():
    from pipelines.model_handler import SortAndBatchByTokens

    rng = np.random.default_rng(5)
    elements = [(f"d{i}", list(range(int(n)))) for i, n in enumerate(rng.integers(1, 50, size=230))]
    fn = SortAndBatchByTokens(max_batch_size=8, max_batch_weight=120, element_size_fn=lambda e: len(e[1]) + 4,
                              sort_window=50)
    fn.start_bundle()
    batches, peak = [], 0
    for element in elements:
        batches.extend(fn.process(element))
        peak = max(peak, len(fn._buffer))
    batches.extend(w.value for w in fn.finish_bundle())
    assert peak < 50  # flushed at the window, never the whole bundle
    assert sorted(e for b in batches for e in b) == sorted(elements)
    for batch in batches:
        widths = [len(ids) + 4 for _, ids in batch]
        assert widths == sorted(widths) and len(batch) <= 8
        assert len(batch) == 1 or len(batch) * max(widths) <= 120


def test_batch_defaults_follow_the_device():
    from commer_core.defaults import (CPU_BATCH_TOKENS, CPU_MAX_BATCH_SIZE, CUDA_BATCH_TOKENS, CUDA_MAX_BATCH_SIZE,
                                      default_batch_tokens, default_max_batch_size)
    from pipelines.model_handler import CompressorModelHandler

    assert CUDA_BATCH_TOKENS > CPU_BATCH_TOKENS and CUDA_MAX_BATCH_SIZE > CPU_MAX_BATCH_SIZE
    for device, tokens, docs in (("cpu", CPU_BATCH_TOKENS, CPU_MAX_BATCH_SIZE),
                                 ("cuda", CUDA_BATCH_TOKENS, CUDA_MAX_BATCH_SIZE),
                                 ("cuda:1", CUDA_BATCH_TOKENS, CUDA_MAX_BATCH_SIZE)):
        assert (default_batch_tokens(device), default_max_batch_size(device)) == (tokens, docs)
        handler = CompressorModelHandler("unused", num_embeddings=4, device=device)
        assert (handler.batch_tokens, handler.max_batch_size) == (tokens, docs)
    handler = CompressorModelHandler("unused", num_embeddings=4, device="cuda", batch_tokens=100, max_batch_size=3)
    assert (handler.batch_tokens, handler.max_batch_size) == (100, 3)


def test_tokenize_docs_takes_batches_and_dead_letters_only_the_text_its_tokenizer_rejects():
    from commer_core.backbone import load_base_tokenizer
    from pipelines.model_handler import TokenizeDocs

    real = load_base_tokenizer("tiny-random")
    calls = []

    def picky(texts, **kwargs):  # the real tokenizer, but it rejects any batch holding "BOOM"
        calls.append(len(texts))
        if any("BOOM" in t for t in texts):
            raise ValueError("cannot tokenize BOOM")
        return real(texts, **kwargs)

    step = TokenizeDocs("tiny-random", max_doc_tokens=4)
    step._tokenizer = picky
    docs = [CorpusDoc("u1", "d1", "one two three four five six", "a.parquet"), CorpusDoc("u1", "d2", "BOOM", "a.parquet"),
            CorpusDoc("u2", "d3", "hello", "b.parquet")]
    out = list(step.process(docs))
    assert calls == [3, 1, 1, 1]  # one call for the batch, then one per document to find the bad one
    good = [o for o in out if not isinstance(o, beam.pvalue.TaggedOutput)]
    dead = [o.value for o in out if isinstance(o, beam.pvalue.TaggedOutput)]
    assert [key[:2] for key, _ in good] == [("u1", "d1"), ("u2", "d3")]
    assert good[0][1] == real(["one two three four five six"], add_special_tokens=False)["input_ids"][0][:4]
    assert len(dead) == 1 and dead[0]["doc_id"] == "d2" and dead[0]["stage"] == "tokenize"
    assert "tokenizer failed: ValueError: cannot tokenize BOOM" in dead[0]["reason"]
    calls.clear()
    assert [key[:2] for key, _ in step.process(docs[::2])] == [("u1", "d1"), ("u2", "d3")] and calls == [2]


def test_importing_the_module_loads_neither_transformers_nor_the_model_code():
    """What the module docstring promises (torch itself comes with Beam's RunInference module)."""
    import subprocess
    import sys

    code = ("import sys, pipelines.model_handler\n"
            "loaded = [m for m in ('transformers', 'peft', 'commer_core.backbone', 'commer_core.compressor')"
            " if m in sys.modules]\n"
            "assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_materialize_checkpoint_uses_local_paths_in_place(tiny_checkpoint, monkeypatch):
    from pipelines.model_handler import materialize_checkpoint

    assert materialize_checkpoint(str(tiny_checkpoint)) == tiny_checkpoint
    assert materialize_checkpoint(f"file://{tiny_checkpoint}") == tiny_checkpoint
    monkeypatch.setenv("HOME", str(tiny_checkpoint.parent))
    assert materialize_checkpoint(f"~/{tiny_checkpoint.name}") == tiny_checkpoint


def test_sort_and_batch_by_tokens_cuts_the_compressors_batches():
    """One batching policy: a window is cut exactly as commer_core.compressor.plan_batches cuts
    it, so the pipeline's batches keep its padding cap (<= 10% of computed tokens) too."""
    from commer_core.compressor import plan_batches
    from pipelines.model_handler import SortAndBatchByTokens

    rng = np.random.default_rng(7)
    elements = [(f"d{i}", list(range(int(n)))) for i, n in enumerate(rng.lognormal(2.5, 0.8, size=60).astype(int) + 1)]
    fn = SortAndBatchByTokens(max_batch_size=8, max_batch_weight=200, element_size_fn=lambda e: len(e[1]) + 4,
                              sort_window=100)
    fn.start_bundle()
    for element in elements:
        assert list(fn.process(element)) == []
    batches = [w.value for w in fn.finish_bundle()]
    planned = [[elements[i] for i in b] for b in plan_batches([len(ids) for _, ids in elements], 4, 200, 8)]
    assert batches == planned
    for batch in batches:
        widths = [len(ids) + 4 for _, ids in batch]
        assert len(batch) == 1 or 1 - sum(widths) / (len(batch) * max(widths)) <= 0.1 + 1e-12
