"""The architecture matrix: every forward pass of the package equals plain `transformers`, for every family.

Each decoder family (see ``tests/families.py``) is built once (``tests/models/conftest.py``) as a tiny random
checkpoint with an untied, trained-size output head, pad == EOS and instruct-style
generation defaults. The reference is always what plain `transformers` computes —
the model's own ``forward`` (logits, soft-capping and scaling included), a
reloaded ``AutoModelForSequenceClassification``, a hand-written decoding loop over
plain forwards (``tests/plain_reference.py``) — never a copy of the package's code. The
seam_grouped attention has its own module, test_attention.py.
"""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from families import EOS_PROMPT, EOS_STEP, INSTRUCT_GENERATION, SOFTCAP, raw_logits
from lightning.pytorch import Trainer, seed_everything
from plain_reference import (
    INSTRUCTIONS,
    RESPONSES,
    TOL,
    check_continuation_logprob_sums,
    check_response_logits,
    greedy_loop,
    plain_logits,
    responses_of,
    rollout,
    seeded_loop,
)
from transformers import AutoModelForSequenceClassification
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

from seam_lightning import DataSource, LoRASettings, RewardModule, RLHFDataModule, SFTModule
from seam_lightning.data.collate import IGNORE_INDEX, pad
from seam_lightning.models.forward import response_token_logprobs, response_values, sequence_rewards
from seam_lightning.models.loading import export_pretrained, load_reward_model
from seam_lightning.modules.ppo import PPOModule
from seam_lightning.rl.generation import SamplingSettings, sample_responses

# --- fixtures: the family checkpoints are tests/models/conftest.py's; the reward models here ---


@pytest.fixture(scope="module")
def has_reward_class(model_type) -> bool:
    return model_type in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES


@pytest.fixture(scope="module")
def reward_model(model_dir, has_reward_class):
    if not has_reward_class:
        pytest.skip("no sequence-classification class: see test_reward_model_of_unsupported_family_is_refused")
    torch.manual_seed(0)  # the new score head
    return load_reward_model(str(model_dir)).eval()


@pytest.fixture(scope="module")
def plain_reward_model(reward_model, tokenizer, tmp_path_factory):
    """The package's reward model saved and reloaded by plain transformers."""
    out = export_pretrained(reward_model, tokenizer, tmp_path_factory.mktemp("exported-rm") / "rm")
    return AutoModelForSequenceClassification.from_pretrained(out).eval()


def _names_model_type(model_type: str) -> re.Pattern:
    # The model type as a word of its own: not inside a class path such as
    # "transformers.models.cohere.configuration_cohere.CohereConfig" (transformers' generic error).
    return re.compile(rf"(?<![\w.]){re.escape(model_type)}(?![\w.])")


# --- the checkpoints are what the matrix needs ---------------------------------------------


@torch.inference_mode()
def test_checkpoint_has_large_logits_untied_head_and_instruct_defaults(family, policy, tokenizer, chats):
    config = policy.config
    assert policy.get_output_embeddings().weight.data_ptr() != policy.get_input_embeddings().weight.data_ptr()
    assert (config.eos_token_id, config.pad_token_id) == (tokenizer.eos_token_id, tokenizer.eos_token_id)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    for key, value in INSTRUCT_GENERATION.items():
        assert getattr(policy.generation_config, key) == value, key
    seq = chats[0][0] + chats[1][0]
    raw = raw_logits(policy, torch.tensor([seq]))
    final = plain_logits(policy, seq)
    assert raw.abs().max() > 20.0  # as large as a trained model's
    if family in ("gemma2", "gemma3"):
        assert config.final_logit_softcapping == SOFTCAP
        assert raw.abs().max() > 1.2 * SOFTCAP  # the cap really bites...
        assert final.abs().max() < SOFTCAP  # ...in the plain forward
        torch.testing.assert_close(final, SOFTCAP * torch.tanh(raw[0] / SOFTCAP), **TOL)
    else:
        torch.testing.assert_close(final, raw[0], **TOL)
    if family == "cohere":
        assert config.logit_scale != 1.0
    if family == "granite":
        assert config.logits_scaling != 1.0
        assert (config.embedding_multiplier, config.residual_multiplier) != (1.0, 1.0)
        assert config.attention_multiplier != 1.0 / math.sqrt(config.hidden_size // config.num_attention_heads)


# --- 1. full forward: response log-probs and logits ----------------------------------------


@torch.inference_mode()
def test_response_token_logprobs_equal_plain_forward(policy, tokenizer, chats):
    check_response_token_logprobs(policy, tokenizer, chats)


@torch.inference_mode()
def test_response_logits_equal_plain_forward(policy, tokenizer, chats):
    check_response_logits(policy, tokenizer, chats)


def check_response_token_logprobs(policy, tokenizer, chats):
    """Right-padded prompt+response batch: the labelled tokens' log-probs are the plain forward's."""
    prompts, responses = chats
    ids, mask = pad([p + r for p, r in zip(prompts, responses)], tokenizer.pad_token_id, "right")
    labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
    for row, prompt in enumerate(prompts):
        labels[row, : len(prompt)] = IGNORE_INDEX
    got, rows = response_token_logprobs(policy, ids, mask, labels)

    plain = policy(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)
    per_token = plain[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
    scored = labels[:, 1:] != IGNORE_INDEX
    torch.testing.assert_close(got, per_token[scored], **TOL)
    assert rows.tolist() == scored.nonzero()[:, 0].tolist()
    assert len(got) == sum(len(r) for r in responses)


# --- 2. shared prompts: summed continuation log-probs --------------------------------------


@torch.inference_mode()
def test_continuation_logprob_sums_equal_plain_forward(policy, tokenizer, chats):
    check_continuation_logprob_sums(policy, tokenizer, chats)


# --- 3. and 4. rewards and values ----------------------------------------------------------


@torch.inference_mode()
def test_sequence_rewards_equal_plain_sequence_classification(reward_model, plain_reward_model, tokenizer, chats):
    prompts, responses = chats
    # Right-padded with pad == EOS, every sequence ending with EOS as a chat response does.
    ids, mask = pad([p + r for p, r in zip(prompts, responses)], tokenizer.pad_token_id, "right")
    assert all(r[-1] == tokenizer.pad_token_id for r in responses)
    got = sequence_rewards(reward_model, ids, mask)
    expected = plain_reward_model(input_ids=ids, attention_mask=mask).logits[:, 0].float()
    torch.testing.assert_close(got, expected, **TOL)
    assert expected.unique().numel() == len(prompts)


@torch.inference_mode()
def test_response_values_equal_plain_rewards_of_prefixes(reward_model, plain_reward_model, tokenizer, chats):
    prompts, responses = chats
    eos = tokenizer.eos_token_id
    ids, mask, start = rollout(prompts, responses, tokenizer.pad_token_id)
    got = response_values(reward_model, ids, mask, start)
    assert got.shape == (len(prompts), ids.shape[1] - start)
    checked = 0
    for row, (prompt, response) in enumerate(zip(prompts, responses)):
        seq = prompt + response
        for t in range(len(response)):
            prefix = seq[: len(prompt) + t]  # V_t: the state that predicts response token t
            if prefix[-1] == eos:  # plain transformers would read the token before a trailing pad/EOS
                continue
            expected = plain_reward_model(input_ids=torch.tensor([prefix])).logits[0, 0].float()
            torch.testing.assert_close(got[row, t], expected, **TOL, msg=lambda m: f"row {row}, t={t}: {m}")
            checked += 1
    assert checked >= sum(len(r) for r in responses) - len(responses)


def test_reward_model_of_unsupported_family_is_refused(model_dir, model_type, has_reward_class):
    if has_reward_class:
        pytest.skip(f"transformers has a sequence-classification class for {model_type}")
    with pytest.raises(ValueError, match=_names_model_type(model_type)):
        load_reward_model(str(model_dir))


# --- 5. generation -------------------------------------------------------------------------


@torch.inference_mode()
def test_greedy_generation_is_plain_argmax_despite_instruct_defaults(policy, tokenizer, chats):
    check_greedy_generation(policy, tokenizer, chats)


def check_greedy_generation(policy, tokenizer, chats):
    """Greedy sample_responses on left-padded prompts = argmax of plain forwards, one unpadded prompt at a time."""
    prompts, _ = chats
    eos = tokenizer.eos_token_id
    assert policy.generation_config.do_sample and policy.generation_config.repetition_penalty != 1.0
    ids, mask = pad(prompts, tokenizer.pad_token_id, "left")
    out = sample_responses(policy, ids, mask, SamplingSettings(max_new_tokens=6), eos, tokenizer.pad_token_id,
                           greedy=True)
    expected = [greedy_loop(policy, p, 6, eos) for p in prompts]
    assert responses_of(out) == expected
    # The checkpoint makes EOS_PROMPT's response stop early, so stopping at EOS is exercised too.
    assert expected[INSTRUCTIONS.index(EOS_PROMPT)][-1] == eos
    assert len(expected[INSTRUCTIONS.index(EOS_PROMPT)]) <= EOS_STEP + 1


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@torch.inference_mode()
def test_seeded_sampling_is_inverse_cdf_overplain_logits(policy, tokenizer, chats, temperature):
    prompts, _ = chats
    eos = tokenizer.eos_token_id
    seeds = [11, 22, 33]
    ids, mask = pad(prompts, tokenizer.pad_token_id, "left")
    out = sample_responses(policy, ids, mask, SamplingSettings(max_new_tokens=6, temperature=temperature), eos,
                           tokenizer.pad_token_id, greedy=False, seeds=seeds)
    expected = [seeded_loop(policy, p, 6, eos, s, temperature) for p, s in zip(prompts, seeds)]
    assert responses_of(out) == expected


# --- sliding windows shorter than the sequences ---------------------------------------------


@torch.inference_mode()
def test_windowed_response_token_logprobs_equal_plain_forward(windowed):
    check_response_token_logprobs(*windowed)


@torch.inference_mode()
def test_windowed_response_logits_equal_plain_forward(windowed):
    check_response_logits(*windowed)


@torch.inference_mode()
def test_windowed_continuation_logprob_sums_equal_plain_forward(windowed):
    check_continuation_logprob_sums(*windowed)


@torch.inference_mode()
def test_windowed_greedy_generation_is_plain_argmax(windowed):
    check_greedy_generation(*windowed)


# --- 6. one training step of each stage ----------------------------------------------------


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return DataSource(str(path))


def _datamodule(tmp_path, stage: str) -> RLHFDataModule:
    questions = [f"What does `json.dumps` do? ({i})" for i in range(4)]
    sources = dict(sft=None, sft_val=None, preference=None, preference_val=None, rl=None, rl_val=None)
    if stage == "sft":
        sources["sft"] = _write_jsonl(tmp_path / "sft.jsonl", [{"instruction": q, "response": RESPONSES[0]}
                                                               for q in questions])
    elif stage == "preference":
        sources["preference"] = _write_jsonl(tmp_path / "prefs.jsonl", [
            {"instruction": q, "chosen": RESPONSES[0], "rejected": RESPONSES[1]} for q in questions])
    else:
        sources["rl"] = _write_jsonl(tmp_path / "rl.jsonl", [{"instruction": q, "response": RESPONSES[0]}
                                                             for q in questions])
    return RLHFDataModule(**sources, batch_size=4)


def _trainer(tmp_path, **kwargs) -> Trainer:
    return Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                   default_root_dir=tmp_path, **kwargs)


def _trainable(module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters() if p.requires_grad}


def _assert_some_changed(before: dict[str, torch.Tensor], module, prefix: str = "") -> None:
    after = dict(module.named_parameters())
    changed = [n for n, p in before.items() if n.startswith(prefix) and not torch.equal(p, after[n].detach())]
    assert changed, f"no trainable weight{' of ' + prefix if prefix else ''} changed"


def _assert_finite(metrics, key: str) -> None:
    assert key in metrics, sorted(metrics)
    assert torch.isfinite(metrics[key]).all(), (key, metrics[key])


def _assert_one_step_trains(module, tmp_path, stage: str) -> None:
    """One optimizer step of an SFT or RM module: a finite loss, and a trainable weight moved."""
    module.configure_model()
    before = _trainable(module)
    trainer = _trainer(tmp_path, max_steps=1)
    trainer.fit(module, datamodule=_datamodule(tmp_path, stage))
    assert trainer.global_step == 1
    _assert_finite(trainer.callback_metrics, "train/loss")
    _assert_some_changed(before, module)


def test_sft_step(model_dir, tmp_path):
    seed_everything(0)
    module = SFTModule(model=str(model_dir), lora=LoRASettings(r=4), learning_rate=1e-2, warmup_steps=0)
    _assert_one_step_trains(module, tmp_path, "sft")


def test_reward_step(model_dir, model_type, has_reward_class, tmp_path):
    seed_everything(0)
    if not has_reward_class:
        with pytest.raises(ValueError, match=_names_model_type(model_type)):
            RewardModule(model=str(model_dir), lora=LoRASettings(r=4))
        return
    module = RewardModule(model=str(model_dir), lora=LoRASettings(r=4), learning_rate=1e-2, warmup_steps=0)
    _assert_one_step_trains(module, tmp_path, "preference")


def test_ppo_step(model_dir, model_type, has_reward_class, tmp_path):
    seed_everything(0)
    lora = LoRASettings(r=4, dropout=0.0)
    kwargs = dict(policy=str(model_dir), reward_model=str(model_dir), lora=lora, value_lora=lora,
                  sampling=SamplingSettings(max_new_tokens=4), learning_rate=1e-2, ppo_epochs=1, mini_batch_size=4,
                  max_ppo_steps=1, evaluate_at_start=False)
    if not has_reward_class:
        with pytest.raises(ValueError, match=_names_model_type(model_type)):
            PPOModule(**kwargs)
        return
    module = PPOModule(**kwargs)
    module.configure_model()
    before = _trainable(module)
    trainer = _trainer(tmp_path, max_epochs=1)
    trainer.fit(module, datamodule=_datamodule(tmp_path, "rl"))
    assert module.ppo_step == 1
    for key in ("train/reward", "train/policy_loss", "train/value_loss", "train/kl"):
        _assert_finite(trainer.callback_metrics, key)
    _assert_some_changed(before, module, "policy.")
    _assert_some_changed(before, module, "value_model.")
