"""The method on the real default model: a short training loop must personalize.

The task is built here: each user's documents state a favourite fruit and a home
city; the target is the user's fruit. Only the compressor (embeddings + LoRA)
trains, through the mean pool, with the frozen base as the generator.
"""

import math

import pytest
import torch

from commer_core.config import CompressorConfig, LoraSettings
from commer_core.compressor import Compressor
from commer_core.generator import Generator
from commer_core.merge import mean_pool

FRUITS = ["mango", "cherry", "banana", "apple", "kiwi", "grape"]
CITIES = ["Paris", "Tokyo", "Lima", "Oslo", "Cairo", "Denver"]
QUESTION = "Which fruit do I like best? Answer:"


def _users():
    users = []
    for i, fruit in enumerate(FRUITS):
        city = CITIES[(i * 5) % len(CITIES)]
        docs = [f"I eat a {fruit} every morning; {fruit} is my favourite fruit.", f"I live in {city} and work downtown."]
        users.append((docs, f" {fruit}"))
    return users


def _mean_perplexity(compressor, generator, users):
    with torch.no_grad():
        nll = 0.0
        tokens = 0
        for docs, target in users:
            prefix = mean_pool(compressor([d.ids for d in compressor.tokenize(docs)]))
            total, count = generator.target_nll([prefix], [QUESTION], [target])
            nll += float(total.sum())
            tokens += int(count.sum())
    return math.exp(nll / tokens)


@pytest.mark.slow
def test_a_short_training_loop_lowers_target_perplexity(real_backbone):
    torch.manual_seed(0)
    # "rms", the trainer's default. With "none" (raw final-layer states, norm ~48 against the embeddings' ~3)
    # this loop diverged on an Intel AVX512/AMX CPU (27,060 -> 346,327) and passed on others: it tested the
    # scale, not the training.
    config = CompressorConfig(num_embeddings=4, lora=LoraSettings(r=8, dropout=0.0), prompt_norm="rms")
    compressor = Compressor(real_backbone, config)
    generator = Generator(compressor)
    users = _users()
    groups = compressor.trainable_parameters()
    opt = torch.optim.AdamW(
        [{"params": groups["embeddings"], "lr": 1e-2}, {"params": groups["lora"], "lr": 1e-4}], weight_decay=0.0
    )
    compressor.eval()
    before = _mean_perplexity(compressor, generator, users)
    compressor.train()
    for step in range(24):
        batch = [users[(2 * step) % 6], users[(2 * step + 1) % 6]]
        prefixes = [mean_pool(compressor([d.ids for d in compressor.tokenize(docs)])) for docs, _ in batch]
        nll, counts = generator.target_nll(prefixes, [QUESTION] * 2, [t for _, t in batch])
        loss = nll.sum() / counts.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    compressor.eval()
    after = _mean_perplexity(compressor, generator, users)
    print(f"target perplexity: untrained {before:.2f} -> trained {after:.2f}")
    assert after < 0.7 * before
