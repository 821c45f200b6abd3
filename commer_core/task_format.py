"""How a task input and its target are laid out for the frozen generator: one format for all.

Training, evaluation and serving all score and generate through
:class:`~commer_core.generator.Generator`, which takes its layout from here, so the three
cannot drift apart. The layout follows the backbone's own conventions:

- a tokenizer with a chat template (SmolLM2-Instruct): ``[soft prompt] <chat-formatted user
  turn holding the input, then the assistant header>`` and the target closed by the
  template's end-of-turn token (SmolLM2's eos, ``<|im_end|>``);
- otherwise: ``[BOS] [soft prompt] input "\\n"`` and ``target EOS``.

Before this format the input and target were glued with no separator and no BOS
(``"...my hobbyHonestly,"``): the model had no cue where the answer starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SEPARATOR = "\n"


@dataclass(frozen=True)
class TaskFormat:
    """Token layout of ``[head] [prefix] input`` and ``target end``, from one tokenizer."""

    tokenizer: Any
    chat: bool

    @classmethod
    def for_tokenizer(cls, tokenizer: Any) -> "TaskFormat":
        return cls(tokenizer, chat=bool(getattr(tokenizer, "chat_template", None)))

    @property
    def name(self) -> str:
        """Recorded in checkpoints: a prompt trained under one layout is read under the same."""
        return "chat-template" if self.chat else "bos-newline"

    @property
    def head_ids(self) -> list[int]:
        """Token ids placed before the soft prompt: the BOS of a plain backbone, nothing for a chat one."""
        bos = self.tokenizer.bos_token_id
        if self.chat or bos is None or bos == self.tokenizer.eos_token_id:
            return []
        return [int(bos)]

    @property
    def end_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    def input_ids(self, inputs: Sequence[str]) -> list[list[int]]:
        """Ids of each input as the user turn, ending where the answer begins."""
        if not inputs:
            return []
        if self.chat:
            texts = [self.tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                                        add_generation_prompt=True) for t in inputs]
        else:
            texts = [t + SEPARATOR for t in inputs]
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def target_ids(self, targets: Sequence[str]) -> list[list[int]]:
        """Ids of each target followed by the end token (what is scored)."""
        if not targets:
            return []
        return [ids + [self.end_id] for ids in self.tokenizer(list(targets), add_special_tokens=False)["input_ids"]]
