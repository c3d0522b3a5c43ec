"""Which models SeamCallback scores with (seam/scoring_models.py): found on the module, or loaded once from a path."""

from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import torch

from seam_lightning.seam.scoring_models import ScoringModels


def models(**kwargs) -> ScoringModels:
    settings = dict(likelihood_from="reference", reference_policy=None, reward_model=None, perplexity_model=None,
                    dtype="float32", attn_implementation="sdpa")
    return ScoringModels(**{**settings, **kwargs})


class PPOLike:
    """What PPOModule exposes: π_ref and the RM as context managers, and its tokenizer."""

    def __init__(self):
        self.policy, self.reference_model, self.reward_model_inside = object(), object(), object()
        self.tokenizer, self.reward_fn, self.device = object(), None, torch.device("cpu")

    @contextmanager
    def reference(self):
        yield self.reference_model

    @contextmanager
    def reward(self):
        yield self.reward_model_inside


class Bare:
    device = torch.device("cpu")


def test_models_come_from_the_module_when_no_path_is_given():
    module = PPOLike()
    with models().policy(module) as policy, models().reward_model(module) as rm:
        assert policy is module.reference_model and rm is module.reward_model_inside
    with models(likelihood_from="current").policy(module) as policy:
        assert policy is module.policy
    assert models().tokenizer(module) is module.tokenizer
    with models().perplexity_model(module) as (model, tokenizer):
        assert model is module.reference_model and tokenizer is module.tokenizer


def test_stage_models_an_sft_or_rm_stage_trains():
    sft = SimpleNamespace(model=object(), data_stage="sft", device=torch.device("cpu"))
    rm = SimpleNamespace(model=object(), data_stage="preference", device=torch.device("cpu"))
    with models(likelihood_from="current").policy(sft) as policy:
        assert policy is sft.model
    with models().reward_model(rm) as reward_model:
        assert reward_model is rm.model


def test_what_is_missing_is_named():
    with pytest.raises(ValueError, match=r"likelihood_from='current'.*Bare exposes no `policy`"):
        with models(likelihood_from="current").policy(Bare()):
            pass
    with pytest.raises(ValueError, match=r"needs reference_policy=.*Bare exposes no reference policy"):
        with models().policy(Bare()):
            pass
    with pytest.raises(ValueError, match=r"needs reward_model=.*Bare exposes no `reward_model`"):
        with models().reward_model(Bare()):
            pass
    with pytest.raises(ValueError, match="Bare has no `tokenizer`; give reference_policy"):
        models().tokenizer(Bare())


def test_paths_are_loaded_once_frozen_and_kept(tiny_model_dir):
    scoring = models(reference_policy=str(tiny_model_dir), reward_model=str(tiny_model_dir))
    with scoring.policy(Bare()) as first, scoring.policy(Bare()) as second:
        assert first is second and not first.training
        assert not any(p.requires_grad for p in first.parameters())
    with scoring.reward_model(Bare()) as rm:
        assert rm is not first and rm.config.num_labels == 1
    tokenizer = scoring.tokenizer(Bare())  # the module has none: the reference policy's
    assert tokenizer is scoring.tokenizer(Bare()) and tokenizer.eos_token_id is not None


def test_a_perplexity_model_path_brings_its_own_tokenizer(tiny_model_dir):
    scoring = models(perplexity_model=str(tiny_model_dir))
    module = PPOLike()
    with scoring.perplexity_model(module) as (model, tokenizer):
        assert model is not module.reference_model and tokenizer is not module.tokenizer
        assert tokenizer.eos_token_id is not None
