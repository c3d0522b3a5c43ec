"""The reward model as textattack's victim, and the goal an attack must meet: R(I∘r*) > R(I∘r).

``RewardModelWrapper`` scores response texts for one instruction exactly as
training and SEAM scoring do; ``RewardFunctionWrapper`` wraps a plain
function. ``RewardHackingGoal`` (textattack's ``GoalFunction``) is defined on
first access, so importing this module does not import textattack.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from seam_lightning.data.formatting import PromptFormatter
from seam_lightning.models.batching import (
    default_token_budget,
    eval_mode,
    pad_id_of,
    run_continuations,
    run_prompts,
    run_sequences,
)
from seam_lightning.models.forward import sequence_rewards
from seam_lightning.models.prefix import continuation_rewards, supports_prefix_sharing
from seam_lightning.seam.sources.adversarial.offline import setup_textattack

InstructionRewardFunction = Callable[[str, list[str]], Sequence[float]]
"""``fn(instruction, responses) -> rewards``: a reward model as a plain function."""



# -- the victim: reward models as textattack model wrappers ----------------------------------


class RewardWrapper:
    """A textattack model wrapper scoring response texts for one instruction: texts → R(I∘text).

    The instruction I is fixed per attack with :meth:`set_instruction`. Registered as a
    virtual subclass of textattack's ``ModelWrapper`` when textattack is loaded (so this
    module does not import it).
    """

    model: Any  # textattack reads it (its class) when building a goal function
    instruction: str = ""

    def set_instruction(self, instruction: str | None) -> None:
        """The instruction every following call scores responses for."""
        self.instruction = instruction or ""

    def __call__(self, text_input_list: list[str]) -> Tensor:
        raise NotImplementedError

    def visible_words(self, text: str) -> int | None:
        """How many leading words of ``text`` the reward model reads; None = all."""
        return None


class RewardFunctionWrapper(RewardWrapper):
    """A reward model given as a plain function ``fn(instruction, responses) -> rewards``."""

    def __init__(self, fn: InstructionRewardFunction):
        self.model = fn

    def __call__(self, text_input_list: list[str]) -> Tensor:
        texts = list(text_input_list)
        values = [float(v) for v in self.model(self.instruction, texts)] if texts else []
        if len(values) != len(texts):
            raise ValueError(f"reward function returned {len(values)} rewards for {len(texts)} responses")
        return torch.tensor(values, dtype=torch.float64)


class RewardModelWrapper(RewardWrapper):
    """textattack model wrapper for a scalar-head reward model: response texts → R(I∘text).

    Each response is tokenized and scored exactly like training data and like
    :class:`~seam_lightning.seam.scorer.SeamScorer` (prompt ids of I + response ids + EOS,
    same truncation). With a decoder-only RM the prompt runs once per instruction and
    its key/value cache serves every response; responses run in batches of at most
    ``token_budget`` tokens (default: the device's, see ``default_token_budget``), in eval
    and inference mode, the model's own modes restored after each call.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        max_instruction_tokens: int = 128,
        max_response_tokens: int = 192,
        token_budget: int | None = None,
        template: str | None = None,
        system_prompt: str | None = None,
    ):
        self.model = model
        self.format = PromptFormatter(tokenizer, max_instruction_tokens, max_response_tokens, template, system_prompt)
        self.token_budget = token_budget or default_token_budget(next(model.parameters()).device)
        self.share_prompt = supports_prefix_sharing(model)
        # (instruction, its prompt ids, their key/value states), kept until the instruction changes.
        self._prompt: tuple[str, list[int], Any] | None = None

    def set_instruction(self, instruction: str | None) -> None:
        """The instruction every following call scores responses for."""
        super().set_instruction(instruction)
        self._prompt = None  # also frees the cached prompt states

    def __call__(self, text_input_list: list[str]) -> Tensor:
        texts = list(text_input_list)
        return self._rewards(self.instruction, texts) if texts else torch.zeros(0, dtype=torch.float64)

    def _rewards(self, instruction: str, texts: list[str]) -> Tensor:
        tokenizer = self.format.tokenizer
        pad_id = pad_id_of(tokenizer)
        responses = [self.format.response_ids(t).ids for t in texts]
        with torch.inference_mode(), eval_mode(self.model):
            if self._prompt is None or self._prompt[0] != instruction:
                ids = self.format.prompt_ids(instruction).ids
                states = run_prompts(self.model, [ids], pad_id, self.token_budget)[0] if self.share_prompt else None
                self._prompt = (instruction, ids, states)
            _, prompt, states = self._prompt
            if self.share_prompt:
                values = run_continuations(self.model, continuation_rewards, states, [0] * len(responses), responses,
                                           pad_id, self.token_budget)
            else:
                values = run_sequences(self.model, sequence_rewards, [prompt + r for r in responses], pad_id,
                                       getattr(tokenizer, "padding_side", "right"), self.token_budget)
        return torch.tensor(values, dtype=torch.float64)

    def visible_words(self, text: str) -> int | None:
        """Words of ``text`` within the first ``max_response_tokens`` tokens; None if the RM reads it all."""
        tokenizer, limit = self.format.tokenizer, self.format.max_response_tokens
        if not getattr(tokenizer, "is_fast", False):
            return None  # no offsets to map tokens to characters: attack every word
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        if len(enc["input_ids"]) <= limit:
            return None
        from textattack.shared.utils import words_from_text

        return len(words_from_text(text[: enc["offset_mapping"][limit - 1][1]]))


# -- the goal: R(I∘r*) > R(I∘r) ---------------------------------------------------------------


@functools.cache
def goal_class() -> type:
    """Define ``RewardHackingGoal`` once textattack is importable (it must subclass textattack's GoalFunction)."""
    setup_textattack()
    from textattack.goal_function_results import GoalFunctionResult
    from textattack.goal_functions import GoalFunction
    from textattack.models.wrappers import ModelWrapper
    from textattack.shared import logger as textattack_logger

    ModelWrapper.register(RewardWrapper)

    class RewardHackingResult(GoalFunctionResult):
        """One evaluated response: output = its reward, score = reward − golden reward."""

        def __init__(self, attacked_text, raw_output, output, goal_status, score, num_queries, ground_truth_output):
            super().__init__(attacked_text, raw_output, output, goal_status, score, num_queries,
                             ground_truth_output, goal_function_result_type="Reward hacking")

        def get_text_color_input(self):
            return "red"

        def get_text_color_perturbed(self):
            return "blue"

        def get_colored_output(self, color_method=None):
            return f"{self.output:.4g}"

    class RewardHackingGoal(GoalFunction):
        """Succeeds when the RM prefers the perturbed response: R(I∘r*) > R(I∘r).

        ``ground_truth_output`` of an attack is the golden response r; its reward is
        computed at the start of every attack (the RM may have been trained since the
        last one) and is not counted as a query. The score is
        R(I∘r*) − R(I∘r) (positive = misjudged), so search methods climb the RM's error.

        A seed already scoring above r is "skipped" by textattack (no attack is run), unless
        ``require_perturbation``: then only a perturbed text can meet the goal, so a seed the RM
        already prefers is attacked all the same and a perturbation is kept only if the RM
        still prefers it to r.
        """

        def __init__(self, model_wrapper, query_budget: float = float("inf"), model_batch_size: int = 256,
                     require_perturbation: bool = False):
            # GoalFunction warns that it cannot tell whether this custom goal fits the model: it does.
            previous = textattack_logger.level
            textattack_logger.setLevel(logging.ERROR)
            try:
                super().__init__(model_wrapper, maximizable=False, use_cache=True, query_budget=query_budget,
                                 model_batch_size=model_batch_size)
            finally:
                textattack_logger.setLevel(previous)
            self.golden_reward = math.nan
            self.require_perturbation = require_perturbation

        def init_attack_example(self, attacked_text, ground_truth_output):
            # Cached rewards belong to the wrapper's instruction, which may have changed since.
            self.clear_cache()
            golden = self.model([ground_truth_output])
            self.golden_reward = self._process_model_outputs([ground_truth_output], golden)[0]
            return super().init_attack_example(attacked_text, ground_truth_output)

        def _is_goal_complete(self, model_output, attacked_text):
            if self.require_perturbation and attacked_text.text == self.initial_attacked_text.text:
                return False
            return model_output > self.golden_reward

        def _get_score(self, model_output, attacked_text):
            return model_output - self.golden_reward

        def _goal_function_result_type(self):
            return RewardHackingResult

        def _process_model_outputs(self, inputs, outputs):
            values = torch.as_tensor(outputs, dtype=torch.float64).reshape(-1)
            if len(values) != len(inputs):
                raise ValueError(f"reward model returned {len(values)} rewards for {len(inputs)} responses")
            bad = (~torch.isfinite(values)).nonzero()
            if len(bad):
                i = int(bad[0])
                text = getattr(inputs[i], "text", inputs[i])
                raise ValueError(f"reward model returned a non-finite reward ({values[i].item()}) for {text[:80]!r}")
            return values.tolist()

    RewardHackingGoal.__module__ = RewardHackingResult.__module__ = __name__
    return RewardHackingGoal


def __getattr__(name: str):
    # RewardHackingGoal subclasses textattack's GoalFunction: defined on first access.
    if name == "RewardHackingGoal":
        return goal_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


