"""SeamCallback: score every RL prompt with SEAM while training runs, and prune the worst.

The callback is an ordinary `lightning.Callback`. On its schedule (at fit start
and after every ``every_n_epochs``-th epoch that another epoch follows) it builds candidates r* for each RL example
(I, r) with its candidate source, scores them with :class:`SeamScorer`, and
removes the ``fraction`` of prompts with the **largest** SEAM — the largest
PM–RM discrepancy — from the data module's RL loader. Ties break by example id.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics import MeanMetric

from seam_lightning.data.records import Record
from seam_lightning.models.loading import load_policy, load_reward_model, load_tokenizer
from seam_lightning.seam.scorer import SeamExample, SeamResult, SeamScorer
from seam_lightning.seam.selection import largest_seam
from seam_lightning.seam.sources.base import CandidateSource

log = logging.getLogger(__name__)


class SeamCallback(Callback):
    """Prune the RL prompts where the reward model and the policy fit each other worst.

    Args:
        source: builds the candidates r* (e.g. ``ContrastSource``).
        mode: ``"prune"`` removes the selected prompts from the RL loader.
        fraction: share of D_rl selected (the largest SEAM values; paper: 0.2).
        num_candidates: candidates per prompt, N (paper: 30).
        every_n_epochs: rescore after every n-th training epoch (0: only at fit start);
            needs ``Trainer(reload_dataloaders_every_n_epochs=1)`` so the next epoch sees the change.
        at_fit_start: score before the first epoch.
        policy: which policy gives log P_PM(r*|I): ``"reference"`` (π_SFT, the paper's) or
            ``"current"`` (the policy being trained; the online variant).
        reference_policy: path/name of π_SFT, when the module does not expose ``reference_policy``.
        reward_model: path/name of the RM, when the module does not expose ``reward_model``.
        scores_path: write every scoring (id, instruction, SEAM, per-candidate terms) here;
            ``.parquet`` or ``.jsonl``. ``{epoch}`` in the name becomes the epoch that trains on
            this selection (0 for the scoring at fit start).
        token_budget: tokens per scoring forward pass (rows × padded length); None picks one
            for the device (2048 on a CPU, 16384 on a GPU).
        progress: show a progress bar while scoring.
    """

    def __init__(
        self,
        source: CandidateSource,
        mode: Literal["prune"] = "prune",
        fraction: float = 0.2,
        num_candidates: int = 30,
        every_n_epochs: int = 1,
        at_fit_start: bool = True,
        policy: Literal["reference", "current"] = "reference",
        reference_policy: str | None = None,
        reward_model: str | None = None,
        scores_path: str | None = None,
        token_budget: int | None = None,
        progress: bool = True,
    ):
        if mode != "prune":
            raise ValueError(f"SeamCallback mode must be 'prune', got {mode!r}")
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
        if num_candidates < 1 or every_n_epochs < 0:
            raise ValueError("num_candidates must be >= 1 and every_n_epochs >= 0")
        if policy not in ("reference", "current"):
            raise ValueError(f"policy must be 'reference' or 'current', got {policy!r}")
        self.source = source
        self.mode = mode
        self.fraction = fraction
        self.num_candidates = num_candidates
        self.every_n_epochs = every_n_epochs
        self.at_fit_start = at_fit_start
        self.policy = policy
        self.reference_policy = reference_policy
        self.reward_model = reward_model
        self.scores_path = scores_path
        self.token_budget = token_budget
        self.progress = progress
        self._loaded: dict[str, Any] = {}
        # State saved in checkpoints.
        self.scores: dict[int, float] = {}
        self.active_ids: list[int] | None = None
        self.pruned_ids: list[int] = []
        self.rescorings = 0

    # -- Lightning hooks --------------------------------------------------------------------

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit" and self.every_n_epochs > 0 and trainer.reload_dataloaders_every_n_epochs != 1:
            raise ValueError(
                "SeamCallback(every_n_epochs>0) changes the RL set between epochs: "
                "set Trainer(reload_dataloaders_every_n_epochs=1), or every_n_epochs=0 to score only at fit start"
            )

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.active_ids is not None:  # resumed: keep the data the run was using
            _datamodule(trainer).set_active_rl_ids(self.active_ids)
        elif self.at_fit_start:
            self.rescore(trainer, pl_module, for_epoch=trainer.current_epoch)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0 and not _last_epoch(trainer):
            self.rescore(trainer, pl_module, for_epoch=trainer.current_epoch + 1)

    def state_dict(self) -> dict[str, Any]:
        return {"scores": dict(self.scores), "active_ids": self.active_ids,
                "pruned_ids": list(self.pruned_ids), "rescorings": self.rescorings}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.scores = {int(k): float(v) for k, v in state_dict["scores"].items()}
        self.active_ids = state_dict["active_ids"]
        self.pruned_ids = list(state_dict["pruned_ids"])
        self.rescorings = state_dict["rescorings"]

    # -- scoring ----------------------------------------------------------------------------

    def rescore(self, trainer: Trainer, pl_module: LightningModule, for_epoch: int = 0) -> list[SeamResult]:
        """Score all of D_rl, prune the largest-SEAM fraction, log and (optionally) write the scores.

        ``for_epoch`` is the epoch that will train on the new selection; it names the scores file.
        """
        datamodule = _datamodule(trainer)
        records = datamodule.records("rl")
        reward_model, tokenizer = self._reward_model(pl_module), self._tokenizer(pl_module)
        self.source.use_reward_model(reward_model, tokenizer)  # e.g. the victim of an adversarial source
        # Candidates are formatted and truncated exactly as the data module formats training data.
        # Score in the Trainer's precision (e.g. bf16 autocast under precision="bf16-mixed").
        with self._policy_model(pl_module) as policy, trainer.precision_plugin.forward_context():
            scorer = SeamScorer(policy, reward_model, tokenizer,
                                max_instruction_tokens=datamodule.max_instruction_tokens,
                                max_response_tokens=datamodule.max_response_tokens,
                                token_budget=self.token_budget, progress=self.progress and trainer.is_global_zero)
            results = list(scorer.score(self._examples(records), total=len(records)))
        previous = set(self.pruned_ids)
        self.scores = {r.id: r.seam for r in results}
        self.pruned_ids = largest_seam(self.scores, self.fraction)
        pruned = set(self.pruned_ids)
        self.active_ids = sorted(set(self.scores) - pruned)
        datamodule.set_active_rl_ids(self.active_ids)
        self.rescorings += 1

        metrics = self._metrics(results, pruned, previous)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})
        rank_zero_info(f"[SeamCallback] scored {len(results)} RL prompts; pruned {len(pruned)} with the largest SEAM "
                       f"(mean {metrics['seam/mean']:.4g}, RM misjudgement rate {metrics['seam/misjudgement_rate']:.3f})")
        if self.scores_path and trainer.is_global_zero:
            path = self.scores_path.format(epoch=for_epoch)
            write_scores(path, results, records, pruned)
            rank_zero_info(f"[SeamCallback] wrote scores to {Path(path).resolve()}")
        return results

    def _examples(self, records: list[Record], chunk: int = 256) -> Iterator[SeamExample]:
        # Candidates are built a chunk at a time so scoring starts early and memory stays flat.
        for start in range(0, len(records), chunk):
            part = records[start:start + chunk]
            candidates = self.source.candidates(
                [r.text["instruction"] for r in part], [r.text["response"] for r in part], self.num_candidates
            )
            for record, cands in zip(part, candidates):
                yield SeamExample(record.id, record.text["instruction"], record.text["response"], list(cands))

    def _metrics(self, results: list[SeamResult], pruned: set[int], previous: set[int]) -> dict[str, float]:
        seam = torch.tensor([r.seam for r in results], dtype=torch.float64)
        misjudged, loglik = MeanMetric(), MeanMetric()
        for r in results:
            if r.candidate_rewards:
                rewards = torch.tensor(r.candidate_rewards)
                misjudged.update((rewards > r.golden_reward).float())
                loglik.update(torch.tensor(r.candidate_logprob_sums) / torch.tensor(r.candidate_lengths))
        empty = not any(r.candidate_rewards for r in results)
        return {
            "seam/mean": seam.mean().item(),
            "seam/q50": seam.quantile(0.5).item(),
            "seam/q90": seam.quantile(0.9).item(),
            "seam/max": seam.max().item(),
            "seam/misjudgement_rate": float("nan") if empty else misjudged.compute().item(),
            "seam/candidate_token_loglik": float("nan") if empty else loglik.compute().item(),
            "seam/prompts_without_candidates": float(sum(not r.candidate_rewards for r in results)),
            "seam/pruned": float(len(pruned)),
            "seam/pruned_share": len(pruned) / max(len(results), 1),
            "seam/overlap_with_previous": len(pruned & previous) / len(pruned) if previous and pruned else float("nan"),
        }

    # -- which models score -----------------------------------------------------------------

    @contextmanager
    def _policy_model(self, pl_module: LightningModule) -> Iterator[torch.nn.Module]:
        """The policy giving log P_PM(r*|I), valid inside the ``with`` block.

        A module may expose π_ref as a ``reference()`` context manager rather than a
        model (PPO with LoRA: the policy with its adapters switched off).
        """
        if self.policy == "current":
            model = getattr(pl_module, "policy", None)
            if model is None and getattr(pl_module, "data_stage", None) == "sft":
                model = pl_module.model
            if model is None:
                raise ValueError(f"SeamCallback(policy='current'): {type(pl_module).__name__} exposes no `policy`")
            yield model
        elif self.reference_policy is not None:
            yield self._load("policy", load_policy, self.reference_policy, pl_module)
        elif callable(getattr(pl_module, "reference", None)):
            with pl_module.reference() as model:
                yield model
        elif getattr(pl_module, "reference_policy", None) is not None:
            yield pl_module.reference_policy
        else:
            raise ValueError("SeamCallback(policy='reference') needs reference_policy=<path of the SFT policy> "
                             f"({type(pl_module).__name__} exposes no reference policy)")

    def _reward_model(self, pl_module: LightningModule) -> torch.nn.Module:
        if self.reward_model is not None:
            return self._load("reward", load_reward_model, self.reward_model, pl_module)
        model = getattr(pl_module, "reward_model", None)
        if model is None and getattr(pl_module, "data_stage", None) == "preference":
            model = pl_module.model
        if model is None:
            raise ValueError(f"SeamCallback needs reward_model=<path of the RM> ({type(pl_module).__name__} "
                             "exposes no `reward_model`)")
        return model

    def _tokenizer(self, pl_module: LightningModule):
        tokenizer = getattr(pl_module, "tokenizer", None)
        if tokenizer is None:
            name = self.reference_policy or self.reward_model
            if name is None:
                raise ValueError(f"SeamCallback: {type(pl_module).__name__} has no `tokenizer`; give reference_policy")
            tokenizer = self._load("tokenizer", load_tokenizer, name, None)
        return tokenizer

    def _load(self, key: str, loader, name: str, pl_module: LightningModule | None):
        # Loaded once per callback and kept: rescoring every epoch must not reload weights.
        if key not in self._loaded:
            obj = loader(name)
            if pl_module is not None:
                obj = obj.to(pl_module.device).eval().requires_grad_(False)
            self._loaded[key] = obj
        return self._loaded[key]


def _last_epoch(trainer: Trainer) -> bool:
    """True when no training epoch follows this one (a rescoring now would serve nothing)."""
    loop = trainer.fit_loop
    max_epochs = loop.max_epochs if loop.max_epochs is not None and loop.max_epochs >= 0 else None
    steps_done = loop.max_steps >= 0 and trainer.global_step >= loop.max_steps
    return trainer.should_stop or steps_done or (max_epochs is not None and trainer.current_epoch + 1 >= max_epochs)


def _datamodule(trainer: Trainer):
    datamodule = trainer.datamodule
    if datamodule is None or not hasattr(datamodule, "set_active_rl_ids"):
        raise TypeError("SeamCallback needs the Trainer's datamodule to be an RLHFDataModule (with an RL set)")
    return datamodule


def write_scores(path: str | Path, results: list[SeamResult], records: list[Record], pruned: set[int]) -> Path:
    """Write one row per RL prompt (id, instruction, SEAM, pruned, per-candidate terms), atomically.

    ``.parquet`` gives a Parquet file, anything else JSON lines.
    """
    path = Path(path)
    instruction = {r.id: r.text["instruction"] for r in records}
    rows = [{
        "id": r.id, "instruction": instruction[r.id], "seam": r.seam, "pruned": r.id in pruned,
        "golden_reward": r.golden_reward, "candidate_rewards": r.candidate_rewards,
        "candidate_logprob_sums": r.candidate_logprob_sums, "candidate_lengths": r.candidate_lengths,
    } for r in results]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        if path.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(rows), tmp)
        else:
            with open(tmp, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path
