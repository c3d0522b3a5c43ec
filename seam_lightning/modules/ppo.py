"""PPOModule: RLHF with PPO on D_rl (the paper's third stage, Appendix A and C.1).

Each training step is one PPO step: sample responses to a batch of RL prompts,
score them with the reward model, penalise per-token KL to the SFT policy, estimate
advantages with GAE against a value model initialised from the reward model, and
make ``ppo_epochs`` passes of clipped policy and value updates over mini-batches.
Optimisation is manual, so Lightning's ``global_step`` counts optimizer updates
(two per mini-batch update: policy and value); the run length in PPO steps is
``max_ppo_steps``, or the number of batches the Trainer feeds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, ClassVar, Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torchmetrics import MeanMetric

from seam_lightning.models.forward import logprobs_of, response_logits, response_values, sequence_rewards
from seam_lightning.models.frozen_blocks import FrozenBlocks, capturing, frozen_blocks, replaying
from seam_lightning.models.mixed_precision import frozen_weights_in_trainer_dtype
from seam_lightning.models.loading import (
    Attention,
    DType,
    LoRASettings,
    Quantization,
    check_reward_family,
    export_pretrained,
    load_policy,
    load_reward_model,
    load_tokenizer,
)
from seam_lightning.modules.base import (
    FrozenBase,
    check_provenance,
    check_trainable_keys,
    drop_frozen_parameters,
    global_token_mean,
    record_provenance,
)
from seam_lightning.rl.functional import (
    KLEstimator,
    gae,
    kl_penalty,
    logprobs_and_entropy,
    masked_mean,
    masked_sum,
    masked_whiten,
    policy_loss,
    token_rewards,
    value_loss,
)
from seam_lightning.rl.generation import Responses, SamplingSettings, sample_responses
from seam_lightning.rl.kl_controller import kl_controller
from seam_lightning.rl.normalization import RunningMoments
from seam_lightning.rl.rollout import Rollout
from seam_lightning.seeding import capture_rng_state, mix_seed, restore_rng_state

RewardFunction = Callable[[list[str], list[str]], Any]
"""(instructions, responses) → one score per response (list or tensor): a programmatic reward."""

NO_DROPOUT = LoRASettings(dropout=0.0)


class PPOModule(LightningModule):
    """PPO with the RM's reward and a per-token KL penalty to the SFT policy.

    Args:
        policy: the SFT policy to start from (its export folder; any hub name / folder / ``bundled:``).
        reward_model: the trained RM (frozen). It must share the policy's tokenizer.
        value_model: where the value model starts (default: the reward model, as in the paper).
        reward_fn: a programmatic reward ``f(instructions, responses) -> scores`` instead of an RM.
        lora: LoRA of the policy. The reference policy is then the same weights with the
            adapters disabled (no second copy); with ``None`` a frozen copy is loaded.
        value_lora: LoRA of the value model (its score head is always trained in full). When the
            value model starts from the reward model (``value_model=None``), the two then share one
            backbone: the value model is the RM with adapters and its own head copy, and the reward
            is read with both switched off (see `reward`) — two backbones in memory instead of three.
        quantization: ``"4bit"`` / ``"8bit"`` base weights (bitsandbytes), or None.
        dtype: precision of every model's weights (``float32``, ``bfloat16``, ``float16``).
        attn_implementation: ``sdpa`` (default), ``eager``, ``seam_grouped`` (grouped-query attention
            that reads the KV cache without copying it, `seam_lightning.models.attention`; the fastest
            on a CPU, see README "Speed"), or ``flash_attention_2`` where installed.
        generation_attn_implementation: the policy's attention while it samples responses only
            (default None: ``attn_implementation``). Each decoding step attends from one token
            over the whole cache; on a CPU ``seam_grouped`` decodes fastest (see README, "Speed").
        gradient_checkpointing: recompute the policy's and the value model's block activations in
            the backward pass. The models then run in train mode with every dropout set to 0
            (checkpointing is active in train mode only), which keeps π/π_old exactly 1 at the start.
        reuse_frozen_blocks: with LoRA on the top blocks (``LoRASettings.layers``), run the frozen
            blocks below them once per rollout — for the policy and π_ref, the value model and the
            reward model sharing its backbone, and every update pass — and start the other passes
            from their output (see `seam_lightning.models.frozen_blocks`). Bitwise the same numbers;
            costs one [B, T, hidden] tensor per model for the step. Checked per model when it loads.
        cast_frozen_weights_once: under mixed precision (bf16-mixed, 16-mixed), hold the frozen
            fp32 linear weights of every model as compute-dtype copies for each PPO step and each
            validation batch, instead of letting autocast cast them again at every forward (it
            caches casts of trainable weights only): in generation that is once per token. The
            same numbers; costs a half-size copy of those weights during the step. Not under FSDP.
        sampling: response sampling (max new tokens, temperature, top-k, top-p).
        learning_rate: policy AdamW learning rate (paper: 1.4e-5).
        value_learning_rate: value AdamW learning rate (default: ``learning_rate``).
        weight_decay: AdamW weight decay.
        ppo_epochs: passes over each rollout batch.
        mini_batch_size: rows per update and device (a batch that is not a multiple ends with a
            smaller mini-batch; under DDP each rank updates on its own rows, with gradients and
            statistics of the global batch).
        gradient_accumulation_steps: mini-batches whose gradients make one update.
        clip_range: ε of the clipped policy objective.
        value_clip_range: ε of the clipped value loss (None: unclipped).
        gamma, lam: discount and GAE λ.
        kl_coef: β, the initial one when adaptive.
        kl_target: target sequence KL of the adaptive controller (None: fixed β).
        kl_horizon: horizon of the adaptive controller, in samples.
        kl_estimator: per-token KL estimate in the reward: ``k1`` (log-ratio), ``k2`` or ``k3``.
        reward_normalization: ``"batch"`` whitens scores per batch, ``"running"`` by the
            mean/std of all scores so far, ``"none"`` leaves them.
        reward_clip: clip (normalised) scores to ±this.
        whiten_advantages: whiten advantages per batch.
        missing_eos_penalty: subtracted from the score of a response cut at ``max_new_tokens``.
        max_grad_norm: clip each model's gradient norm (None: no clipping).
        max_ppo_steps: stop after this many PPO steps (None: when the Trainer stops).
        evaluate_at_start: measure the held-out reward before the first update (``val/reward_before``).
        eval_greedy: evaluate greedy responses (deterministic) rather than sampled ones.
        seed: seed of the response sampling. Each prompt's response is drawn from its own
            stream, seeded by (seed, PPO step, example id), so it does not depend on the
            batch it is in or the rank that runs it: a DDP run samples what one process would.
        export_dir: where to write the trained policy (None: no export).
        allow_changed_bases: resume from a checkpoint although a frozen model it depends on (the
            policy's or value model's base, a separate reference, the reward model) now has other
            weights than when it was written, with a warning instead of a ValueError; e.g. after
            ``runs/sft/export`` was rebuilt. Not saved with the hyperparameters, so it never sticks.
    """

    data_stage: ClassVar[str] = "rl"

    def __init__(
        self,
        policy: str = "runs/sft/export",
        reward_model: str | None = "runs/reward/export",
        value_model: str | None = None,
        reward_fn: RewardFunction | None = None,
        lora: LoRASettings | None = NO_DROPOUT,
        value_lora: LoRASettings | None = NO_DROPOUT,
        quantization: Quantization | None = None,
        dtype: DType = "float32",
        attn_implementation: Attention = "sdpa",
        generation_attn_implementation: Attention | None = None,
        gradient_checkpointing: bool = False,
        reuse_frozen_blocks: bool = True,
        cast_frozen_weights_once: bool = True,
        sampling: SamplingSettings = SamplingSettings(),
        learning_rate: float = 1.4e-5,
        value_learning_rate: float | None = None,
        weight_decay: float = 0.0,
        ppo_epochs: int = 4,
        mini_batch_size: int = 8,
        gradient_accumulation_steps: int = 1,
        clip_range: float = 0.2,
        value_clip_range: float | None = 0.2,
        gamma: float = 1.0,
        lam: float = 0.95,
        kl_coef: float = 0.2,
        kl_target: float | None = 6.0,
        kl_horizon: int = 10000,
        kl_estimator: KLEstimator = "k1",
        reward_normalization: Literal["none", "batch", "running"] = "none",
        reward_clip: float | None = None,
        whiten_advantages: bool = True,
        missing_eos_penalty: float | None = None,
        max_grad_norm: float | None = 1.0,
        max_ppo_steps: int | None = None,
        evaluate_at_start: bool = True,
        eval_greedy: bool = True,
        seed: int = 0,
        export_dir: str | None = None,
        allow_changed_bases: bool = False,
    ):
        super().__init__()
        if (reward_model is None) == (reward_fn is None):
            raise ValueError("PPOModule needs exactly one of reward_model (a path) and reward_fn (a function)")
        if ppo_epochs < 1 or mini_batch_size < 1 or gradient_accumulation_steps < 1:
            raise ValueError("ppo_epochs, mini_batch_size and gradient_accumulation_steps must be >= 1")
        if reward_normalization not in ("none", "batch", "running"):
            raise ValueError(f"reward_normalization must be 'none', 'batch' or 'running', got {reward_normalization!r}")
        kl_penalty(torch.zeros(1), torch.zeros(1), kl_estimator)  # reject a bad estimator name now, not at step 1
        self.save_hyperparameters(ignore=["reward_fn", "allow_changed_bases"])
        self.automatic_optimization = False
        # Frozen weights are reloaded from their sources, not stored in checkpoints, so Lightning's
        # strict loading would miss them; on_load_checkpoint checks the trainable keys strictly instead.
        self.strict_loading = False
        self.allow_changed_bases = allow_changed_bases

        self.tokenizer = load_tokenizer(policy)
        self.reward_fn = reward_fn
        for name in filter(None, (reward_model, value_model)):
            _check_same_tokenizer(self.tokenizer, name)
        for name in {reward_model, value_model or reward_model or policy} - {None}:
            check_reward_family(name)  # now, not when the weights load
        # With value LoRA on the RM, the frozen RM is the value model with its adapters off (see `reward`).
        self.shares_reward_backbone = reward_model is not None and value_model is None and value_lora is not None
        frozen = dict(quantization=quantization, dtype=dtype, attn_implementation=attn_implementation)
        trained = dict(frozen, gradient_checkpointing=gradient_checkpointing)
        self._loaders = {
            "policy": partial(load_policy, policy, lora=lora, **trained),
            # With LoRA, π_ref is the policy with its adapters switched off (see `reference`).
            "reference_policy": partial(load_policy, policy, **frozen) if lora is None else None,
            "value_model": partial(load_reward_model, value_model or reward_model or policy, lora=value_lora,
                                   **trained),
            "reward_model": partial(load_reward_model, reward_model, **frozen)
            if reward_model is not None and not self.shares_reward_backbone else None,
        }
        # Built in configure_model, where the strategy decides placement.
        self.policy: nn.Module | None = None
        self.reference_policy: nn.Module | None = None
        self.reward_model: nn.Module | None = None
        self.value_model: nn.Module | None = None
        # The frozen bottom blocks of the policy and of the value model, when they are reused.
        self._frozen_policy_blocks: FrozenBlocks | None = None
        self._frozen_value_blocks: FrozenBlocks | None = None

        self.sampling = sampling
        self.export_dir = export_dir
        self.kl_controller = kl_controller(kl_coef, kl_target, kl_horizon)
        self.reward_moments = RunningMoments()
        self.ppo_step = 0
        self._rng_to_restore: dict[str, Any] | None = None
        self.val_reward, self.val_kl, self.val_length = MeanMetric(), MeanMetric(), MeanMetric()

    # -- models -----------------------------------------------------------------------------

    def configure_model(self) -> None:
        """Load the policy, π_ref, the RM and the value model (once; outside a Trainer call it yourself)."""
        if self.policy is not None:
            return
        self.policy = self._loaders["policy"]()
        if self._loaders["reference_policy"] is not None:
            self.reference_policy = _frozen(self._loaders["reference_policy"]())
        if self._loaders["reward_model"] is not None:
            self.reward_model = _frozen(self._loaders["reward_model"]())
        self.value_model = self._loaders["value_model"]()
        if self.hparams.gradient_checkpointing:
            disable_dropout(self.policy)
            disable_dropout(self.value_model)
        if self.hparams.reuse_frozen_blocks:
            self._frozen_policy_blocks = frozen_blocks(self.policy)
            self._frozen_value_blocks = frozen_blocks(self.value_model)

    @contextmanager
    def reference(self) -> Iterator[nn.Module]:
        """The frozen reference policy π_ref (π_SFT): with LoRA, the policy with adapters disabled."""
        if self.reference_policy is not None:
            yield self.reference_policy
        else:
            with self.policy.disable_adapter():
                yield self.policy

    @contextmanager
    def reward(self) -> Iterator[nn.Module]:
        """The frozen reward model: with a shared backbone, the value model with its adapters switched off.

        peft then also switches the value head's trained copy back to the RM's own head,
        so this gives exactly the rewards of the RM loaded on its own.
        """
        if self.reward_model is not None:
            yield self.reward_model
        elif self.shares_reward_backbone:
            with self.value_model.disable_adapter():
                yield self.value_model
        else:
            raise ValueError("PPOModule: this run has a programmatic reward (reward_fn), no reward model")

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        hp = self.hparams
        groups = [(self.policy, hp.learning_rate), (self.value_model, hp.value_learning_rate or hp.learning_rate)]
        optimizers = []
        for model, lr in groups:
            params = [p for p in model.parameters() if p.requires_grad]
            if not params:
                raise ValueError(f"PPOModule: the {type(model).__name__} has no trainable parameters")
            optimizers.append(torch.optim.AdamW(params, lr=lr, weight_decay=hp.weight_decay))
        return optimizers

    # -- one PPO step -----------------------------------------------------------------------

    def _frozen_weights_in_compute_dtype(self):
        """Every model's frozen linear weights in autocast's dtype for the block (``cast_frozen_weights_once``)."""
        models = [m for m in (self.policy, self.reference_policy, self.value_model, self.reward_model) if m is not None]
        return frozen_weights_in_trainer_dtype(self.trainer, *models, enabled=self.hparams.cast_frozen_weights_once)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if self._rng_to_restore is not None:  # resumed: continue the random stream where it stopped
            restore_rng_state(self._rng_to_restore)
            self._rng_to_restore = None
        # No dropout anywhere: the ratio π/π_old must be exactly 1 before the first update.
        self.policy.eval()
        self.value_model.eval()

        with self._frozen_weights_in_compute_dtype():
            started = time.perf_counter()
            rollout = self.rollout(batch)
            rollout_time = time.perf_counter() - started
            started = time.perf_counter()
            update_stats = self.update(rollout)
            update_time = time.perf_counter() - started

        kl_coef = self.kl_controller.value  # the β this step's rewards used
        all_kl = self._gather_rows(rollout.sequence_kl)  # every rank's, so β moves the same everywhere
        self.kl_controller.update(all_kl.mean().item(), n_steps=len(all_kl))
        self.ppo_step += 1
        mask = rollout.mask
        stats = {
            "train/reward": rollout.raw_scores.mean(),
            "train/reward_std": rollout.raw_scores.std() if len(mask) > 1 else torch.zeros(()),
            "train/kl": rollout.sequence_kl.mean(),
            "train/kl_coef": torch.tensor(kl_coef),
            "train/non_score_reward": masked_sum(rollout.rewards, mask) / len(mask) - rollout.scores.mean(),
            "train/response_length": mask.sum(-1).float().mean(),
            "train/no_eos_fraction": (~rollout.ended).float().mean(),
            "train/advantage_mean": masked_mean(rollout.advantages, mask),
            "train/value_mean": masked_mean(rollout.values, mask),
            "train/ppo_step": torch.tensor(float(self.ppo_step)),
            "time/generation_s": torch.tensor(rollout.generation_time),
            "time/rollout_s": torch.tensor(rollout_time),
            "time/update_s": torch.tensor(update_time),
            **update_stats,
        }
        # Means over ranks of per-rank means: every rank holds the same number of prompts.
        self.log_dict({k: v.float() for k, v in stats.items()}, batch_size=len(mask), sync_dist=True)
        self.log("reward", stats["train/reward"].float(), prog_bar=True, logger=False, batch_size=len(mask),
                 sync_dist=True)
        self.log("kl", stats["train/kl"].float(), prog_bar=True, logger=False, batch_size=len(mask), sync_dist=True)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.hparams.max_ppo_steps is not None and self.ppo_step >= self.hparams.max_ppo_steps:
            self.trainer.should_stop = True

    @torch.no_grad()
    def rollout(self, batch: dict[str, Any]) -> Rollout:
        """Sample responses and compute everything PPO needs about them (no gradients)."""
        hp = self.hparams
        started = time.perf_counter()
        seeds = [mix_seed(hp.seed, self.ppo_step, int(i)) for i in batch["ids"]]
        responses = self._sample(batch, greedy=False, seeds=seeds)
        generation_time = time.perf_counter() - started

        logprobs, ref_logprobs, values, policy_prefix, value_prefix = [], [], [], [], []
        for rows in _row_chunks(len(batch["ids"]), hp.mini_batch_size):
            seq, attn, tokens = responses.sequences[rows], responses.attention_mask[rows], responses.tokens[rows]
            policy, reference, prefix = self._policy_and_reference_logprobs(seq, attn, tokens, responses.start)
            logprobs.append(policy)
            ref_logprobs.append(reference)
            policy_prefix += prefix
            with capturing(self._frozen_value_blocks) as captured:
                values.append(response_values(self.value_model, seq, attn, responses.start))
            value_prefix += captured
        logprobs, ref_logprobs, values = torch.cat(logprobs), torch.cat(ref_logprobs), torch.cat(values)
        policy_prefix = torch.cat(policy_prefix) if policy_prefix else None
        value_prefix = torch.cat(value_prefix) if value_prefix else None

        mask = responses.response_mask
        _stop_on_non_finite(batch["ids"], "log-prob under the policy", logprobs, mask, self._all_sum)
        _stop_on_non_finite(batch["ids"], "log-prob under the reference policy", ref_logprobs, mask, self._all_sum)
        raw_scores = self._scores(batch, responses, value_prefix)
        _stop_on_non_finite(batch["ids"], "reward", raw_scores, None, self._all_sum)
        scores = self._shape_scores(raw_scores, responses.ended)
        kl = kl_penalty(logprobs, ref_logprobs, hp.kl_estimator)
        rewards = token_rewards(scores, kl, self.kl_controller.value, mask)
        advantages, returns = gae(rewards, values, mask, hp.gamma, hp.lam)
        if hp.whiten_advantages:
            advantages = masked_whiten(advantages, mask, all_sum=self._all_sum)
        return Rollout(
            responses=responses, logprobs=logprobs, values=values, raw_scores=raw_scores, scores=scores,
            rewards=rewards, advantages=advantages, returns=returns, generation_time=generation_time,
            # Sequence KL (k1 summed over tokens) is what the adaptive controller targets.
            sequence_kl=masked_sum(logprobs - ref_logprobs, mask, dim=-1),
            policy_prefix=policy_prefix, value_prefix=value_prefix,
        )

    def update(self, rollout: Rollout) -> dict[str, Tensor]:
        """``ppo_epochs`` passes of clipped policy and value updates over shuffled mini-batches."""
        totals: dict[str, list[Tensor]] = {}
        # Gradient checkpointing acts in train mode only (its models have no dropout left);
        # sampling and the rollout's forwards stay in eval mode, where generation keeps its cache.
        with _train_mode(self.hparams.gradient_checkpointing, self.policy, self.value_model):
            for _ in range(self.hparams.ppo_epochs):
                self._update_epoch(rollout, totals)
        return {name: torch.stack(values).mean() for name, values in totals.items()}

    def _update_epoch(self, rollout: Rollout, totals: dict[str, list[Tensor]]) -> None:
        """One pass over the rollout's shuffled mini-batches; appends each update's statistics to ``totals``."""
        hp = self.hparams
        responses = rollout.responses
        policy_opt, value_opt = self.optimizers()
        n_rows = len(rollout.mask)
        per_epoch = -(-n_rows // hp.mini_batch_size)  # the last mini-batch may be smaller
        order = torch.randperm(n_rows, device=rollout.mask.device)
        for i in range(per_epoch):
            rows = order[i * hp.mini_batch_size:(i + 1) * hp.mini_batch_size]
            seq, attn, mask = responses.sequences[rows], responses.attention_mask[rows], rollout.mask[rows]
            with replaying(self._frozen_policy_blocks, rollout.policy_prefix, rows):
                logits = response_logits(self.policy, seq, attn, responses.start, self.sampling.temperature)
            logprobs, entropy = logprobs_and_entropy(logits, responses.tokens[rows])
            del logits  # the log-softmax keeps what its backward needs
            pg_loss, clip_fraction, approx_kl = policy_loss(
                logprobs, rollout.logprobs[rows], rollout.advantages[rows], mask, hp.clip_range)
            with replaying(self._frozen_value_blocks, rollout.value_prefix, rows):
                values = response_values(self.value_model, seq, attn, responses.start)
            vf_loss, vf_clip_fraction = value_loss(
                values, rollout.values[rows], rollout.returns[rows], mask, hp.value_clip_range)
            # One backward for both models (DDP reduces every trainable weight in each
            # backward), as the mean over the tokens of every rank's mini-batch.
            tokens = mask.sum()
            loss, _ = global_token_mean(self, (pg_loss + vf_loss) * tokens, tokens)
            self.manual_backward(loss / hp.gradient_accumulation_steps)
            if (i + 1) % hp.gradient_accumulation_steps == 0 or i + 1 == per_epoch:
                for optimizer in (policy_opt, value_opt):
                    if hp.max_grad_norm is not None:
                        # Under fp16 AMP the gradients are still multiplied by the GradScaler's
                        # scale here: Lightning unscales them only inside `optimizer.step()`, and
                        # unscaling them now would make that step's `unscale_` raise. Clipping the
                        # scaled norm at max_grad_norm × scale is clipping the true norm at
                        # max_grad_norm, with the scale the step will divide by.
                        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
                        scale = scaler.get_scale() if scaler is not None else 1.0
                        self.clip_gradients(optimizer, gradient_clip_val=hp.max_grad_norm * scale,
                                            gradient_clip_algorithm="norm")
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
            for name, value in (("policy_loss", pg_loss), ("value_loss", vf_loss), ("clip_fraction", clip_fraction),
                                ("value_clip_fraction", vf_clip_fraction), ("approx_kl", approx_kl),
                                ("entropy", masked_mean(entropy, mask))):
                totals.setdefault(f"train/{name}", []).append(value.detach())

    def _sample(self, batch: dict[str, Any], greedy: bool, seeds: list[int] | None = None) -> Responses:
        return sample_responses(self.policy, batch["input_ids"], batch["attention_mask"], self.sampling,
                                eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.tokenizer.pad_token_id,
                                greedy=greedy, seeds=seeds,
                                attn_implementation=self.hparams.generation_attn_implementation)

    # -- across DDP ranks (identities in a single process) -----------------------------------

    def _world_size(self) -> int:
        return self._trainer.world_size if self._trainer is not None else 1

    def _all_sum(self, value: Tensor) -> Tensor:
        """``value`` summed over ranks."""
        if self._world_size() == 1:
            return value
        return self.trainer.strategy.reduce(value.clone(), reduce_op="sum")

    def _gather_rows(self, value: Tensor) -> Tensor:
        """Per-prompt values [B] of every rank, concatenated [world × B]."""
        if self._world_size() == 1:
            return value
        return self.all_gather(value).reshape(-1)

    def _logprobs(self, model: nn.Module, seq: Tensor, attn: Tensor, tokens: Tensor, start: int) -> Tensor:
        return logprobs_of(response_logits(model, seq, attn, start, self.sampling.temperature), tokens)

    def _policy_and_reference_logprobs(self, seq: Tensor, attn: Tensor, tokens: Tensor,
                                       start: int) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Log-probs under π and π_ref, and the policy's frozen-block output (in a list; empty if not reused).

        With LoRA π_ref is the policy with its adapters off, so it starts from the frozen
        blocks' output the policy's forward recorded.
        """
        frozen = self._frozen_policy_blocks
        with capturing(frozen) as prefix:
            logprobs = self._logprobs(self.policy, seq, attn, tokens, start)
        with self.reference() as reference, replaying(frozen if reference is self.policy else None,
                                                      prefix[0] if prefix else None):
            ref_logprobs = self._logprobs(reference, seq, attn, tokens, start)
        return logprobs, ref_logprobs, prefix

    def _scores(self, batch: dict[str, Any], responses: Responses, value_prefix: Tensor | None = None) -> Tensor:
        """R(I∘r) per response: the reward model's, or the programmatic reward's.

        ``value_prefix``: the value model's frozen-block output for these sequences, which a
        reward model sharing the value model's backbone starts from.
        """
        if self.reward_fn is None:
            with self.reward() as reward_model:
                shared = self._frozen_value_blocks if reward_model is self.value_model else None
                with replaying(shared, value_prefix):
                    return sequence_rewards(reward_model, responses.sequences, responses.attention_mask)
        texts = self.tokenizer.batch_decode(
            [tokens[mask.bool()] for tokens, mask in zip(responses.tokens, responses.response_mask)],
            skip_special_tokens=True)
        scores = torch.as_tensor(self.reward_fn(list(batch["instruction"]), texts), dtype=torch.float32)
        if scores.shape != (len(texts),):
            raise ValueError(f"reward_fn returned shape {tuple(scores.shape)} for {len(texts)} responses")
        return scores.to(self.device)

    def _shape_scores(self, scores: Tensor, ended: Tensor) -> Tensor:
        hp = self.hparams
        scores = scores.float()
        if hp.missing_eos_penalty is not None:
            scores = scores - hp.missing_eos_penalty * (~ended).float()
        everyone = self._gather_rows(scores)  # normalise by the global batch, as one process would
        if hp.reward_normalization == "batch" and len(everyone) > 1:
            scores = (scores - everyone.mean()) / (everyone.std() + 1e-8)
        elif hp.reward_normalization == "running":
            self.reward_moments.update(everyone)
            scores = (scores - self.reward_moments.mean) / (self.reward_moments.std + 1e-8)
        if hp.reward_clip is not None:
            scores = scores.clamp(-hp.reward_clip, hp.reward_clip)
        return scores

    # -- evaluation -------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate_batch(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Reward, sequence KL to π_ref and length of one response per held-out prompt."""
        greedy = self.hparams.eval_greedy
        # Sampled evaluation draws each prompt's response from a fixed stream of its own.
        seeds = None if greedy else [mix_seed(self.hparams.seed, -1, int(i)) for i in batch["ids"]]
        responses = self._sample(batch, greedy=greedy, seeds=seeds)
        logprobs, ref_logprobs, _ = self._policy_and_reference_logprobs(
            responses.sequences, responses.attention_mask, responses.tokens, responses.start)
        return {
            "reward": self._scores(batch, responses).float(),
            "kl": masked_sum(logprobs - ref_logprobs, responses.response_mask, dim=-1),
            "length": responses.lengths.float(),
        }

    def on_validation_epoch_start(self) -> None:
        for metric in (self.val_reward, self.val_kl, self.val_length):
            metric.reset()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.policy.eval()
        with self._frozen_weights_in_compute_dtype():
            result = self.evaluate_batch(batch)
        self.val_reward.update(result["reward"])
        self.val_kl.update(result["kl"])
        self.val_length.update(result["length"])

    def on_validation_epoch_end(self) -> None:
        self.log("val/reward", self.val_reward.compute(), prog_bar=True)
        self.log("val/kl", self.val_kl.compute())
        self.log("val/response_length", self.val_length.compute())

    def on_train_start(self) -> None:
        if not self.hparams.evaluate_at_start or self.trainer.global_step > 0:
            return
        datamodule = self.trainer.datamodule
        loader = datamodule.val_dataloader() if datamodule is not None else []
        if not loader:
            return
        self.policy.eval()
        rewards = []
        # Outside a training step, so enter the Trainer's precision context (e.g. bf16 autocast) ourselves.
        with self.trainer.precision_plugin.forward_context(), self._frozen_weights_in_compute_dtype():
            for batch in loader:
                batch = self.transfer_batch_to_device(batch, self.device, 0)
                rewards.append(self.evaluate_batch(batch)["reward"])
        before = torch.cat(rewards).mean().item()
        metrics = {"val/reward_before": before}
        for logger in self.loggers:
            logger.log_metrics(metrics, step=0)
        self.trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})
        rank_zero_info(f"[PPOModule] mean reward on {sum(len(r) for r in rewards)} held-out prompts before training: {before:.4f}")

    # -- checkpoints and export ---------------------------------------------------------------

    def _frozen_bases(self) -> dict[str, FrozenBase]:
        """The models whose frozen weights the checkpoints depend on (those without any are left out later).

        With LoRA the reference policy is the policy's base, so only a separately loaded
        one is listed; with a shared backbone the reward model is the value model's frozen
        weights including the RM's own head, which the value model's entry leaves out
        (its trained head copy is in the checkpoint).
        """
        hp = self.hparams
        bases = {
            "policy": FrozenBase(hp.policy, self.policy, with_replaced_originals=False),
            "value_model": FrozenBase(hp.value_model or hp.reward_model or hp.policy, self.value_model,
                                      with_replaced_originals=False),
        }
        if self.reference_policy is not None:
            bases["reference_policy"] = FrozenBase(hp.policy, self.reference_policy)
        if self.reward_model is not None:
            bases["reward_model"] = FrozenBase(hp.reward_model, self.reward_model)
        elif self.shares_reward_backbone:
            bases["reward_model"] = FrozenBase(hp.reward_model, self.value_model, with_replaced_originals=True)
        return bases

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = drop_frozen_parameters(checkpoint["state_dict"], self)
        checkpoint["provenance"] = record_provenance(self._frozen_bases())
        checkpoint["ppo"] = {
            "ppo_step": self.ppo_step,
            "kl_controller": self.kl_controller.state_dict(),
            "reward_moments": self.reward_moments.state_dict(),
            "rng": capture_rng_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Runs after configure_model (in the Trainer and in load_from_checkpoint), so the models are built.
        check_trainable_keys(self, checkpoint["state_dict"])
        check_provenance("PPOModule", checkpoint.get("provenance"), record_provenance(self._frozen_bases()),
                         self.allow_changed_bases)
        state = checkpoint.get("ppo")
        if state is None:
            return
        self.ppo_step = state["ppo_step"]
        self.kl_controller.load_state_dict(state["kl_controller"])
        self.reward_moments.load_state_dict(state["reward_moments"])
        # Applied at the next training step: restoring the trainer consumes random numbers in between.
        self._rng_to_restore = state["rng"]

    def on_train_end(self) -> None:
        if self.export_dir and self.trainer.is_global_zero:
            path = export_pretrained(self.policy, self.tokenizer, self.export_dir)
            rank_zero_info(f"[PPOModule] exported the trained policy to {path.resolve()}")


@contextmanager
def _train_mode(enabled: bool, *models: nn.Module) -> Iterator[None]:
    """Train mode for ``models`` inside the block when ``enabled``; eval mode again after it."""
    if enabled:
        for model in models:
            model.train()
    try:
        yield
    finally:
        for model in models:
            model.eval()


def disable_dropout(model: nn.Module) -> None:
    """Set every dropout probability of ``model`` to 0: modules and attention-dropout attributes."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        for name in ("attention_dropout", "dropout"):
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)


def _frozen(model: nn.Module) -> nn.Module:
    return model.eval().requires_grad_(False)


def _check_same_tokenizer(tokenizer, name: str) -> None:
    # Rewards and values are read off the policy's own token ids, so the vocabularies must agree.
    other = load_tokenizer(name)
    if other.get_vocab() != tokenizer.get_vocab():
        raise ValueError(f"{name}: its tokenizer differs from the policy's; PPO needs the reward and value "
                         "models to share the policy's vocabulary")


def _stop_on_non_finite(ids: Any, what: str, values: Tensor, mask: Tensor | None,
                  all_sum: Callable[[Tensor], Tensor]) -> None:
    """Stop on a NaN/inf (on the response tokens) before it reaches an update, naming the example ids.

    The check is collective — every rank learns that some rank saw one — so no rank
    is left waiting in a collective for a rank that stopped.
    """
    finite = torch.isfinite(values) if mask is None else torch.isfinite(values) | (mask == 0)
    bad_rows = ~finite if finite.dim() == 1 else ~finite.all(-1)
    if all_sum(bad_rows.sum().float()).item() == 0:
        return
    bad = [int(ids[i]) for i in torch.nonzero(bad_rows).flatten().tolist()]
    where = f"RL example id(s) {bad}" if bad else "example(s) on another rank"
    raise FloatingPointError(f"PPO: non-finite {what} for {where}; stopping before it reaches an update")


def _row_chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, start + size)
