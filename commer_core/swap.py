"""The controls of the personalization gap: another user's documents, and one prompt for everyone.

Why these two controls: a soft prompt can lower perplexity without reading the user at
all (it may only teach the task format). Scoring the same examples with a *deranged*
user's documents, and (ComMer) with the mean of every user's merged prompt, separates
"the user's own data helps" from "any prompt helps".

Choice of the other user's documents: :class:`~commer_core.training.examples.PreparedExample`
already holds documents selected for its input. Example ``j`` of user ``u`` receives the
documents of example ``j mod m`` of user ``derangement(u)`` (``m`` = that user's number of
examples, in the given order): documents that were selected for the *other* user's input,
exactly what that user's stored prompt would carry in the product path (LaMP has one
example per user, so it is that user's only example). Inputs and targets are unchanged,
so own and other pair up example by example.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import Any

import torch

from commer_core.generator import Prefix
from commer_core.personalization import Gap, derangement, personalization_gap
from commer_core.training.examples import PreparedExample
from commer_core.training.methods import CommerMethod, Method, NoPersonalization
from commer_core.training.scoring import autocast, batches, corpus_perplexity, score_examples

Scores = list[tuple[float, int]]


def donor_indices(examples: Sequence[PreparedExample], seed: int = 0,
                  pool: Sequence[PreparedExample] | None = None) -> list[int]:
    """For each example, the index (into ``pool``, default ``examples``) of the example whose documents it receives.

    Example ``j`` of user ``u`` (in order) gets example ``j mod m`` of user ``partner(u)``:
    ``derangement(u)`` within ``examples``, or, with a separate ``pool`` (e.g. the training
    split's users when the scored split holds a single unseen user, as on PerLTQA), a seeded
    choice among the pool's users other than ``u``.
    """
    donors_of: dict[str, list[int]] = {}
    for i, e in enumerate(examples if pool is None else pool):
        donors_of.setdefault(e.user_id, []).append(i)
    users = list(dict.fromkeys(e.user_id for e in examples))
    partner = derangement(users, seed) if pool is None else _pool_partners(users, list(donors_of), seed)
    seen: dict[str, int] = {}
    out = []
    for e in examples:
        j = seen.get(e.user_id, 0)
        seen[e.user_id] = j + 1
        donors = donors_of[partner[e.user_id]]
        out.append(donors[j % len(donors)])
    return out


def _pool_partners(users: Sequence[str], pool_users: Sequence[str], seed: int) -> dict[str, str]:
    """Each user -> a pool user other than themself, spread evenly over a seeded shuffle of the pool."""
    order = sorted(pool_users)
    random.Random(f"commer-donor-pool/{seed}").shuffle(order)
    out = {}
    for i, u in enumerate(sorted(users)):
        others = [p for p in order if p != u]
        if not others:
            raise ValueError(f"the donor pool holds no user other than {u!r}")
        out[u] = others[i % len(others)]
    return out


def swap_documents(examples: Sequence[PreparedExample], seed: int = 0,
                   pool: Sequence[PreparedExample] | None = None) -> list[PreparedExample]:
    """The same examples, each carrying the documents of a different user (of ``pool``, if given).

    Raises ``ValueError`` with fewer than two users and no pool (see :func:`derangement`).
    """
    source = examples if pool is None else pool
    return [dataclasses.replace(e, documents=source[d].documents)
            for e, d in zip(examples, donor_indices(examples, seed, pool))]


def reads_documents(method: Method) -> bool:
    """Whether a method's prefix depends on the user's documents (the gap is defined for it)."""
    return not isinstance(method, NoPersonalization)


@torch.inference_mode()
def merged_prompts(method: CommerMethod, examples: Sequence[PreparedExample], *, batch_size: int = 8,
                   bf16: bool = False) -> list[torch.Tensor | None]:
    """Each example's merged k x d prompt (None without documents), compressed once."""
    method.eval()
    out: list[torch.Tensor | None] = []
    for batch in batches(examples, batch_size):
        with autocast(method.generator.device, bf16):
            out.extend(method.prefixes(batch))
    return out


class GivenPrefixes(Method):
    """Prefixes computed beforehand, looked up by example id (the swap reuses ComMer's compressions)."""

    name = "given_prefixes"

    def __init__(self, inner: Method, prefixes: dict[str, Prefix]) -> None:
        super().__init__(inner.generator)
        self.inner = inner
        self.table = prefixes

    def prefixes(self, batch: Sequence[PreparedExample]) -> list[Prefix]:
        return [self.table[e.example_id] for e in batch]

    def prompt_tokens(self, example: PreparedExample) -> int:
        prefix = self.table[example.example_id]
        return 0 if prefix is None else int(prefix.shape[0])

    def eval(self) -> None:
        self.inner.eval()


class MeanPromptMethod(Method):
    """ComMer with one prompt for everyone: the mean over users of their merged prompts.

    Each user's prompt is the mean of the merged prompts of that user's examples (one
    example per user on LaMP), then users are averaged with equal weight. Built once from
    ``examples`` (or their ``prompts`` from :func:`merged_prompts`); every example then
    gets that same k x d prefix.
    """

    name = "commer_mean_prompt"

    def __init__(self, inner: CommerMethod, examples: Sequence[PreparedExample], *, batch_size: int = 8,
                 bf16: bool = False, prompts: Sequence[torch.Tensor | None] | None = None) -> None:
        super().__init__(inner.generator)
        self.inner = inner
        if prompts is None:
            prompts = merged_prompts(inner, examples, batch_size=batch_size, bf16=bf16)
        self.prompt = self._population_prompt(examples, prompts)

    @staticmethod
    def _population_prompt(examples: Sequence[PreparedExample], prompts: Sequence[torch.Tensor | None]) -> torch.Tensor:
        per_user: dict[str, list[torch.Tensor]] = {}
        for e, p in zip(examples, prompts):
            if p is not None:
                per_user.setdefault(e.user_id, []).append(p.float())
        if not per_user:
            raise ValueError("no example has documents: there is no prompt to average")
        users = [torch.stack(ps).mean(0) for ps in per_user.values()]
        return torch.stack(users).mean(0)

    def prefixes(self, batch: Sequence[PreparedExample]) -> list[Prefix]:
        return [self.prompt] * len(batch)

    def prompt_tokens(self, example: PreparedExample) -> int:
        return int(self.prompt.shape[0])

    def eval(self) -> None:
        self.inner.eval()

    def describe(self) -> dict[str, Any]:
        return {"method": self.name, **{k: v for k, v in self.inner.describe().items() if k != "method"}}


@dataclasses.dataclass(frozen=True)
class PersonalizationScores:
    """Per-example (summed NLL, tokens) of one method: own documents, another user's, and the mean prompt."""

    own: Scores
    other: Scores
    mean: Scores | None = None  # ComMer only


def personalization_scores(
    method: Method, examples: Sequence[PreparedExample], *, seed: int = 0, batch_size: int = 8, bf16: bool = False,
    own: Scores | None = None, pool: Sequence[PreparedExample] | None = None,
) -> PersonalizationScores:
    """Score ``examples`` with own documents (or reuse ``own``), swapped documents and (ComMer) the mean prompt.

    ``pool``: donors of the swapped documents from other users than the scored ones (see
    :func:`donor_indices`); the mean prompt then averages the scored and the pool's users.
    ComMer compresses each example's documents once: the swap hands the donor example's
    merged prompt to the receiving example instead of recompressing the same documents.
    """
    own = list(own) if own is not None else score_examples(method, examples, batch_size=batch_size, bf16=bf16)
    if len(own) != len(examples):
        raise ValueError(f"own scores ({len(own)}) do not match the examples ({len(examples)})")
    everyone = list(examples) + list(pool or ())
    ids_unique = len({e.example_id for e in everyone}) == len(everyone)
    if not isinstance(method, CommerMethod) or not ids_unique:
        other = score_examples(method, swap_documents(examples, seed, pool), batch_size=batch_size, bf16=bf16)
        mean = None
        if isinstance(method, CommerMethod):
            control = MeanPromptMethod(method, everyone, batch_size=batch_size, bf16=bf16)
            mean = score_examples(control, examples, batch_size=batch_size, bf16=bf16)
        return PersonalizationScores(own, other, mean)
    prompts = merged_prompts(method, everyone, batch_size=batch_size, bf16=bf16)
    donor_prompts = prompts if pool is None else prompts[len(examples):]
    donors = donor_indices(examples, seed, pool)
    given = GivenPrefixes(method, {e.example_id: donor_prompts[d] for e, d in zip(examples, donors)})
    other = score_examples(given, examples, batch_size=batch_size, bf16=bf16)
    control = MeanPromptMethod(method, everyone, prompts=prompts)
    return PersonalizationScores(own, other, score_examples(control, examples, batch_size=batch_size, bf16=bf16))


def scores_report(scores: PersonalizationScores, *, seed: int = 0) -> dict[str, Any]:
    """Perplexities and gaps (other - own; mean prompt - own) of already computed scores."""
    gap: Gap = personalization_gap(scores.own, scores.other, seed=seed)
    report: dict[str, Any] = {
        "examples": len(scores.own),
        "own_perplexity": corpus_perplexity(scores.own),
        "other_perplexity": corpus_perplexity(scores.other),
        "mean_prompt_perplexity": corpus_perplexity(scores.mean) if scores.mean is not None else None,
        "gap": gap.to_dict(),
        "mean_prompt_gap": personalization_gap(scores.own, scores.mean, seed=seed).to_dict()
        if scores.mean is not None else None,
    }
    return report


def personalization_report(
    method: Method, examples: Sequence[PreparedExample], *, seed: int = 0, batch_size: int = 8, bf16: bool = False,
    own: Scores | None = None,
) -> dict[str, Any]:
    """Own / other-user / (ComMer) mean-prompt perplexities and the gap with its bootstrap interval.

    ``gap`` is :class:`~commer_core.personalization.Gap` as a dict (other minus own, nats per
    token; > 0: the user's own documents help). ``seed`` fixes the derangement and the
    bootstrap. Pass ``own`` (from :func:`~commer_core.training.scoring.score_examples`) to skip re-scoring.
    """
    scores = personalization_scores(method, examples, seed=seed, batch_size=batch_size, bf16=bf16, own=own)
    return {"seed": seed, **scores_report(scores, seed=seed)}
