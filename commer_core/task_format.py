"""How a task input and its target are laid out for the frozen generator: one format for all.

Training, evaluation and serving all score and generate through
:class:`~commer_core.generator.Generator`, which takes its layout from here, so the three
cannot drift apart. The layout follows the backbone's own conventions:

- a tokenizer with a chat template (SmolLM2-Instruct): the template's text up to the user
  turn's content (system turn, ``<|im_start|>user\\n``), then ``[soft prompt] input``, then the
  rest of the template up to the assistant header; the target is closed by the template's
  end-of-turn token (SmolLM2's eos, ``<|im_end|>``). With ``position="start"`` (checkpoints
  from before this option) the soft prompt comes first, before the whole chat text: there it
  takes the place of the first token, which a causal LM uses as an attention sink (attended to
  by everything, its value ignored), so the prompt was hard to read;
- otherwise: ``[BOS] [soft prompt] input "\\n"`` and ``target EOS``.

Before this format the input and target were glued with no separator and no BOS
(``"...my hobbyHonestly,"``): the model had no cue where the answer starts.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools
from dataclasses import dataclass
from typing import Any

from commer_core.config import PROMPT_POSITIONS  # where a soft prompt goes in a chat layout (see above)

SEPARATOR = "\n"
_MARK = "\x00commer-input\x00"  # stands for the input while the chat template is rendered


@dataclass(frozen=True, eq=False)
class TaskFormat:
    """Token layout of ``[head] [prefix] input`` and ``target end``, from one tokenizer."""

    tokenizer: Any
    chat: bool
    position: str = "turn"

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, position: str = "turn") -> "TaskFormat":
        """The layout for a tokenizer; ``position`` is the compressor config's ``prompt_position``."""
        if position not in PROMPT_POSITIONS:
            raise ValueError(f"prompt position must be one of {PROMPT_POSITIONS}, got {position!r}")
        return cls(tokenizer, chat=bool(getattr(tokenizer, "chat_template", None)), position=position)

    @property
    def name(self) -> str:
        return f"chat-template/{self.position}" if self.chat else "bos-newline"

    @functools.cached_property
    def _chat_parts(self) -> tuple[str, str]:
        """The chat template's text before and after a user turn's content."""
        text = self.tokenizer.apply_chat_template([{"role": "user", "content": _MARK}], tokenize=False,
                                                  add_generation_prompt=True)
        head, tail = text.split(_MARK)
        return head, tail

    @functools.cached_property
    def head_ids(self) -> list[int]:
        """Token ids placed before the soft prompt: the chat text up to the user's content, or a plain backbone's BOS."""
        if self.chat:
            if self.position == "start":
                return []
            return list(self.tokenizer(self._chat_parts[0], add_special_tokens=False)["input_ids"])
        bos = self.tokenizer.bos_token_id
        if bos is None or bos == self.tokenizer.eos_token_id:
            return []
        return [int(bos)]

    @property
    def end_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    def input_ids(self, inputs: Sequence[str]) -> list[list[int]]:
        """Ids of each input as the user turn, ending where the answer begins."""
        if not inputs:
            return []
        if self.chat and self.position == "turn":
            texts = [t + self._chat_parts[1] for t in inputs]
        elif self.chat:
            head, tail = self._chat_parts
            texts = [head + t + tail for t in inputs]
        else:
            texts = [t + SEPARATOR for t in inputs]
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def target_ids(self, targets: Sequence[str]) -> list[list[int]]:
        """Ids of each target followed by the end token (what is scored)."""
        if not targets:
            return []
        return [ids + [self.end_id] for ids in self.tokenizer(list(targets), add_special_tokens=False)["input_ids"]]
