"""Which models SEAM scores with: the policy giving log P_PM(r*|I), the RM, the tokenizer and the
perplexity baseline's model, each taken from the LightningModule being trained or loaded once from a path."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule

from seam_lightning.models.loading import Attention, DType, load_policy, load_reward_model, load_tokenizer


class ScoringModels:
    """The models one SeamCallback scores with. Models loaded from paths are loaded on first use and kept:
    rescoring every epoch must not reload weights."""

    def __init__(self, likelihood_from: Literal["reference", "current"], reference_policy: str | None,
                 reward_model: str | None, perplexity_model: str | None, dtype: DType, attn_implementation: Attention):
        self.likelihood_from = likelihood_from
        self.reference_policy_path = reference_policy
        self.reward_model_path = reward_model
        self.perplexity_model_path = perplexity_model
        self.dtype = dtype
        self.attn_implementation = attn_implementation
        self._loaded: dict[str, Any] = {}

    @contextmanager
    def policy(self, pl_module: LightningModule) -> Iterator[torch.nn.Module]:
        """The policy giving log P_PM(r*|I), valid inside the ``with`` block.

        A module may expose π_ref as a ``reference()`` context manager rather than a
        model (PPO with LoRA: the policy with its adapters switched off).
        """
        if self.likelihood_from == "current":
            model = getattr(pl_module, "policy", None)
            if model is None and getattr(pl_module, "data_stage", None) == "sft":
                model = pl_module.model
            if model is None:
                raise ValueError(f"SeamCallback(likelihood_from='current'): {type(pl_module).__name__} exposes no `policy`")
            yield model
        elif self.reference_policy_path is not None:
            yield self._load("policy", self._with_settings(load_policy), self.reference_policy_path, pl_module)
        elif callable(getattr(pl_module, "reference", None)):
            with pl_module.reference() as model:
                yield model
        elif getattr(pl_module, "reference_policy", None) is not None:
            yield pl_module.reference_policy
        else:
            raise ValueError("SeamCallback(likelihood_from='reference') needs reference_policy=<path of the SFT policy> "
                             f"({type(pl_module).__name__} exposes no reference policy)")

    @contextmanager
    def reward_model(self, pl_module: LightningModule) -> Iterator[torch.nn.Module]:
        """The RM: the ``reward_model`` path if given, else the module's (PPO: its `reward()`, which may be the
        value model with its adapters switched off), else the model an RM stage trains."""
        if self.reward_model_path is not None:
            yield self._load("reward", self._with_settings(load_reward_model), self.reward_model_path, pl_module)
        elif callable(getattr(pl_module, "reward", None)) and getattr(pl_module, "reward_fn", None) is None:
            with pl_module.reward() as model:
                yield model
        elif getattr(pl_module, "reward_model", None) is not None:
            yield pl_module.reward_model
        elif getattr(pl_module, "data_stage", None) == "preference":
            yield pl_module.model
        else:
            raise ValueError(f"SeamCallback needs reward_model=<path of the RM> ({type(pl_module).__name__} "
                             "exposes no `reward_model`)")

    @contextmanager
    def perplexity_model(self, pl_module: LightningModule) -> Iterator[tuple[torch.nn.Module, Any]]:
        """(model, tokenizer) of ``selection="perplexity"``: ``perplexity_model``, else the policy SEAM uses."""
        if self.perplexity_model_path is None:
            with self.policy(pl_module) as model:
                yield model, self.tokenizer(pl_module)
            return
        model = self._load("perplexity", self._with_settings(load_policy), self.perplexity_model_path, pl_module)
        yield model, self._load("perplexity_tokenizer", load_tokenizer, self.perplexity_model_path, None)

    def tokenizer(self, pl_module: LightningModule):
        """The module's tokenizer, else that of the reference policy or RM path."""
        tokenizer = getattr(pl_module, "tokenizer", None)
        if tokenizer is None:
            name = self.reference_policy_path or self.reward_model_path
            if name is None:
                raise ValueError(f"SeamCallback: {type(pl_module).__name__} has no `tokenizer`; give reference_policy")
            tokenizer = self._load("tokenizer", load_tokenizer, name, None)
        return tokenizer

    def _with_settings(self, loader):
        """A model loader with this callback's dtype and attention."""
        return partial(loader, dtype=self.dtype, attn_implementation=self.attn_implementation)

    def _load(self, key: str, loader, name: str, pl_module: LightningModule | None):
        if key not in self._loaded:
            obj = loader(name)
            if pl_module is not None:  # a model: frozen, on the module's device
                obj = obj.to(pl_module.device).eval().requires_grad_(False)
            self._loaded[key] = obj
        return self._loaded[key]
