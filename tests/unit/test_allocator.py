"""The allocator setting that keeps freed activations resident (commer_core.allocator)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None, reason="glibc only"
)

# The compressor as the job's workers run it, on 32 tweet-like documents in 1024-token batches,
# counting the minor page faults of the compression alone (model loaded, the same documents compressed once before).
_COMPRESS = """
import resource, sys, torch
from commer_core.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False  # "default" opts out through GLIBC_TUNABLES
torch.set_num_threads(1)
from commer_core.backbone import load_backbone
from commer_core.compressor import Compressor
from commer_core.config import CompressorConfig
from jobs.bench.perf import make_documents
compressor = Compressor(load_backbone(sys.argv[2]), CompressorConfig(base_model=sys.argv[2]))
compressor.merge_lora()
docs = make_documents("tweet", 32, compressor.tokenizer.vocab_size)
compressor.compress_tokenized(docs, batch_tokens=1024)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
compressor.compress_tokenized(docs, batch_tokens=1024)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(mode: str, model: str = "tiny-random", env: dict[str, str] | None = None) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", _COMPRESS, mode, model], capture_output=True, text=True, check=True,
        env={**os.environ, **(env or {})},
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.slow
def test_compression_stops_faulting_its_activations_in_again() -> None:
    applied, kept = _page_faults("keep", "smollm2-135m")
    # load_backbone applies the setting too; an operator's GLIBC_TUNABLES (glibc's default value here) opts out
    _, default = _page_faults("default", "smollm2-135m", {"GLIBC_TUNABLES": "glibc.malloc.perturb=0"})
    assert applied == "True"
    # a 1024x1536 fp32 activation is 1536 pages; glibc's default faults them in again on every pass
    # (16-260 thousand over these 32 documents, its dynamic threshold makes it vary), kept memory 0-2 thousand
    assert default > 10_000
    assert kept * 5 < default


def test_an_operators_glibc_tunables_win() -> None:
    applied, _ = _page_faults("keep", env={"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"})
    assert applied == "False"
