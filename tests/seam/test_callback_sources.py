"""SeamCallback with each candidate source on the demo data: contrast is in test_callback; here llm and adversarial."""

import pytest
import torch
from doubles import ListSource, RLConsumer
from lightning.pytorch import Trainer
from openai_server import MODEL, FakeOpenAI

from seam_lightning import DataSource, RLHFDataModule, SeamCallback
from seam_lightning.data.records import load_records
from seam_lightning.llm import OpenAIBackend, TransformersBackend
from seam_lightning.seam import AdversarialSource, LLMSource

PROMPTS = 4


def _fit(model_dir, source, tmp_path) -> SeamCallback:
    torch.manual_seed(0)  # the RM's scalar head is new and random
    callback = SeamCallback(source, fraction=0.25, num_candidates=3, every_n_epochs=0, reference_policy=str(model_dir),
                            reward_model=str(model_dir), progress=False)
    data = RLHFDataModule(sft=None, sft_val=None, preference=None, preference_val=None,
                          rl=DataSource("demo://rl_train", limit=PROMPTS), rl_val=None, batch_size=2)
    Trainer(accelerator="cpu", max_epochs=1, callbacks=[callback], logger=False, enable_progress_bar=False,
            enable_checkpointing=False, enable_model_summary=False, default_root_dir=tmp_path,
            ).fit(RLConsumer(str(model_dir)), datamodule=data)
    return callback


def _assert_scored(callback: SeamCallback, source) -> None:
    assert sorted(callback.scores) == list(range(PROMPTS)) and len(callback.pruned_ids) == 1
    assert source.last_stats.prompts == PROMPTS and source.last_stats.candidates > 0


def test_llm_source_through_an_openai_compatible_server(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FakeOpenAI() as server:
        source = LLMSource(OpenAIBackend(MODEL, base_url=server.url), cache_dir=str(tmp_path / "llm"), progress=False)
        _assert_scored(_fit(tiny_model_dir, source, tmp_path), source)
        assert len(server.requests) == PROMPTS  # three numbered answers per reply: one request each


def test_llm_source_with_a_local_transformers_model(tiny_model_dir, tmp_path):
    source = LLMSource(TransformersBackend(str(tiny_model_dir)), max_tokens=24, max_rounds=1, seed=0,
                       cache_dir=str(tmp_path / "llm"), progress=False)
    callback = _fit(tiny_model_dir, source, tmp_path)
    # A random tiny model rarely writes a list: what it writes is split into paragraphs, maybe none.
    assert sorted(callback.scores) == list(range(PROMPTS)) and source.last_stats.prompts == PROMPTS


@pytest.mark.parametrize("attack", ["deepwordbug", "pwws"])
def test_adversarial_source_attacks_the_runs_reward_model(tiny_model_dir, tmp_path, attack):
    # Worse responses to attack: other demo prompts' golden answers.
    records = load_records(DataSource("demo://rl_train", limit=PROMPTS + 3), ("instruction", "response"))
    table = {r.text["instruction"]: [o.text["response"] for o in records if o.id != r.id][:3] for r in records}
    source = AdversarialSource(attack=attack, seeds=ListSource(table), query_budget=30, progress=False)
    callback = _fit(tiny_model_dir, source, tmp_path)
    assert sorted(callback.scores) == list(range(PROMPTS))
    assert source.reward_wrapper is not None  # bound to the callback's reward model, not loaded again
    assert source.last_stats.prompts == PROMPTS
