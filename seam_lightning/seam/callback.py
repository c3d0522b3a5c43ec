"""SeamCallback: score every RL prompt with SEAM while training runs, then prune or augment.

The callback is an ordinary `lightning.Callback`. On its schedule (at fit start
and after every ``every_n_epochs``-th epoch that another epoch follows) it builds
candidates r* for each RL example (I, r) with its candidate source, scores them
with :class:`SeamScorer`, and selects the ``fraction`` of prompts with the
**largest** SEAM — Eq. 2's value, the largest PM–RM discrepancy, i.e. the lowest
seamlessness, which is what the paper filters (``order="smallest"`` takes the
other end, for the ablation); ties break by example id. ``selection="perplexity"``
ranks by the golden response's perplexity instead (the paper's §7 "LLaMa"
baseline), ``"random"`` draws the fraction at random. In ``prune`` mode the
selection leaves the RL loader; in ``augment`` mode it gets contrast-instruction
examples in the SFT and preference sets (paper §8).

Under DDP each rank scores its share of D_rl (records rank, rank + world, …), the
results are gathered, and every rank takes the same decision from the same
numbers (checked). Each scored chunk is appended to a progress file first, so a
run killed while scoring resumes without scoring anything twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics import MeanMetric

from seam_lightning.data.formatting import PromptFormatter
from seam_lightning.data.records import Record
from seam_lightning.jsonl import write_jsonl_atomic
from seam_lightning.models.loading import Attention, DType, load_policy, load_reward_model, load_tokenizer
from seam_lightning.seeding import mix_seed
from seam_lightning.seam.augment import contrast_augmentations
from seam_lightning.seam.perplexity import golden_perplexities
from seam_lightning.seam.progress import ScoringProgress, example_key, model_fingerprint, run_fingerprint
from seam_lightning.models.batching import default_token_budget
from seam_lightning.seam.scorer import SeamExample, SeamResult, SeamScorer
from seam_lightning.seam.selection import select_fraction, selection_size
from seam_lightning.seam.sources.base import CandidateSource
from seam_lightning.seam.sources.contrast import ContrastSource

log = logging.getLogger(__name__)


class SeamCallback(Callback):
    """Prune or augment the RL prompts where the reward model and the policy fit each other worst.

    Args:
        source: builds the candidates r* (e.g. ``ContrastSource``).
        mode: ``"prune"`` removes the selected prompts from the RL loader; ``"augment"`` adds
            contrast-instruction examples for them to the SFT set, (I*, r*), and to the
            preference set, (I, chosen=r, rejected=r*) (paper §8). Augmented examples reach
            the next epoch's SFT/preference loader, are marked ``augmented`` and are saved
            in checkpoints.
        fraction: share of D_rl selected (paper: 0.2; App. E.1 varies it from 0.1 to 0.8).
        selection: ``"seam"``, ranked by SEAM; ``"perplexity"``, ranked by the perplexity of the
            golden response under ``perplexity_model`` (the paper's §7 "LLaMa" baseline, which
            filters the highest perplexity; prune mode only); ``"random"``, the same fraction
            drawn at random (the paper's baseline; nothing is scored); ``"all"``, every prompt
            (full augmentation; augment mode only).
        order: which end of the ranking ``"seam"``/``"perplexity"`` selection takes.
            ``"largest"`` (default): the largest values. For SEAM these are the largest Eq. 2
            values — the largest PM–RM discrepancy, i.e. the *lowest seamlessness*, the
            "low-SEAM data" the paper filters (§7, App. E); for perplexity, the highest
            perplexity (§7). ``"smallest"``: the smallest values, for the ablation that tests
            that reading. Ties break by example id (smaller first) in both orders.
        perplexity_model: the language model of ``selection="perplexity"`` (a path, hub name or
            ``bundled:`` name, loaded with its own tokenizer and ``dtype``/``attn_implementation``;
            the paper used LLaMa2-7B). Default: the policy SEAM would use (see ``policy``: π_SFT,
            i.e. ``reference_policy`` or the module's reference, or the module's current policy).
        num_candidates: candidates per prompt, N (paper: 30).
        every_n_epochs: rescore after every n-th training epoch (0: only at fit start);
            needs ``Trainer(reload_dataloaders_every_n_epochs=1)`` so the next epoch sees the change.
        at_fit_start: score before the first epoch.
        policy: which policy gives log P_PM(r*|I): ``"reference"`` (π_SFT, the paper's) or
            ``"current"`` (the policy being trained; the online variant).
        reference_policy: path/name of π_SFT, when the module does not expose ``reference_policy``.
        reward_model: path/name of the RM, when the module does not expose ``reward_model``.
        dtype: weight precision of the models this callback loads itself (``reference_policy``,
            ``reward_model``): ``float32``, ``bfloat16`` or ``float16``.
        attn_implementation: attention of the models this callback loads (``sdpa``, ``eager``,
            ``flash_attention_2``).
        scores_path: write every scoring (id, instruction, SEAM, per-candidate terms) here;
            ``.parquet`` or ``.jsonl``. ``{epoch}`` in the name becomes the epoch that trains on
            this selection (0 for the scoring at fit start).
        token_budget: tokens per scoring forward pass (rows × padded length); None picks one
            for the device (2048 on a CPU, 16384 on a GPU).
        progress: show a progress bar while scoring.
        augmentations_per_prompt: contrast examples per selected prompt (paper: 5).
        augment_source: where augmentations come from (default: ``source``, which must then
            be a ``ContrastSource``).
        augment_dir: also write every augmented example so far to ``sft.jsonl`` and
            ``preference.jsonl`` here (atomically), for a later stage's data module.
        chunk_size: prompts whose candidates are built, scored and saved together.
        save_progress: append each scored chunk to a progress file and reuse it on a rerun.
        progress_dir: where progress files go (default ``<default_root_dir>/seam_progress``).
        seed: seed of ``selection="random"`` (each rescoring draws anew).
    """

    def __init__(
        self,
        source: CandidateSource,
        mode: Literal["prune", "augment"] = "prune",
        fraction: float = 0.2,
        selection: Literal["seam", "perplexity", "random", "all"] = "seam",
        order: Literal["largest", "smallest"] = "largest",
        perplexity_model: str | None = None,
        num_candidates: int = 30,
        every_n_epochs: int = 1,
        at_fit_start: bool = True,
        policy: Literal["reference", "current"] = "reference",
        reference_policy: str | None = None,
        reward_model: str | None = None,
        dtype: DType = "float32",
        attn_implementation: Attention = "sdpa",
        scores_path: str | None = None,
        token_budget: int | None = None,
        progress: bool = True,
        augmentations_per_prompt: int = 5,
        augment_source: ContrastSource | None = None,
        augment_dir: str | None = None,
        chunk_size: int = 64,
        save_progress: bool = True,
        progress_dir: str | None = None,
        seed: int = 0,
    ):
        if mode not in ("prune", "augment"):
            raise ValueError(f"SeamCallback mode must be 'prune' or 'augment', got {mode!r}")
        if selection not in ("seam", "perplexity", "random", "all"):
            raise ValueError(f"selection must be 'seam', 'perplexity', 'random' or 'all', got {selection!r}")
        if selection == "all" and mode == "prune":
            raise ValueError("selection='all' would prune every RL prompt; it is for mode='augment'")
        if selection == "perplexity" and mode == "augment":
            raise ValueError("selection='perplexity' is the paper's data-selection baseline (§7, pruning); "
                             "augmentation (§8) compares SEAM with 'random' and 'all': use mode='prune'")
        if order not in ("largest", "smallest"):
            raise ValueError(f"order must be 'largest' or 'smallest', got {order!r}")
        if order != "largest" and selection not in ("seam", "perplexity"):
            raise ValueError(f"order={order!r} ranks scores, but selection={selection!r} scores nothing")
        if perplexity_model is not None and selection != "perplexity":
            raise ValueError(f"perplexity_model is used only by selection='perplexity' (selection={selection!r})")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if augmentations_per_prompt < 1:
            raise ValueError(f"augmentations_per_prompt must be >= 1, got {augmentations_per_prompt}")
        if mode == "augment" and augment_source is None and not isinstance(source, ContrastSource):
            raise ValueError("SeamCallback(mode='augment') builds contrast-instruction examples: give "
                             f"augment_source=ContrastSource(...) (the source is a {type(source).__name__})")
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
        if num_candidates < 1 or every_n_epochs < 0:
            raise ValueError("num_candidates must be >= 1 and every_n_epochs >= 0")
        if policy not in ("reference", "current"):
            raise ValueError(f"policy must be 'reference' or 'current', got {policy!r}")
        self.source = source
        self.mode = mode
        self.fraction = fraction
        self.selection = selection
        self.order = order
        self.perplexity_model = perplexity_model
        self.num_candidates = num_candidates
        self.every_n_epochs = every_n_epochs
        self.at_fit_start = at_fit_start
        self.policy = policy
        self.reference_policy = reference_policy
        self.reward_model = reward_model
        self.dtype = dtype
        self.attn_implementation = attn_implementation
        self.scores_path = scores_path
        self.token_budget = token_budget
        self.progress = progress
        self.augmentations_per_prompt = augmentations_per_prompt
        self.augment_source = augment_source
        self.augment_dir = augment_dir
        self.chunk_size = chunk_size
        self.save_progress = save_progress
        self.progress_dir = progress_dir
        self.seed = seed
        self._loaded: dict[str, Any] = {}
        # State saved in checkpoints (the augmented examples live in the data module's state).
        # `scores`: the values the latest selection ranked (SEAM, or perplexity with selection="perplexity").
        self.scores: dict[int, float] = {}
        self.active_ids: list[int] | None = None
        self.selected_ids: list[int] = []
        self.rescorings = 0
        # This rank's share of the latest scoring: prompts whose saved score was reused / newly scored.
        self.last_scoring = {"reused": 0, "scored": 0}

    @property
    def pruned_ids(self) -> list[int]:
        """The RL ids removed from training (empty in augment mode)."""
        return self.selected_ids if self.mode == "prune" else []

    # -- Lightning hooks --------------------------------------------------------------------

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit" and self.every_n_epochs > 0 and trainer.reload_dataloaders_every_n_epochs != 1:
            raise ValueError(
                "SeamCallback(every_n_epochs>0) changes the RL set between epochs: "
                "set Trainer(reload_dataloaders_every_n_epochs=1), or every_n_epochs=0 to score only at fit start"
            )

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.rescorings:  # resumed: keep the data the run was using (augmentations are restored with the data module)
            _datamodule(trainer).set_active_rl_ids(self.active_ids)
        elif self.at_fit_start:
            self.rescore(trainer, pl_module, for_epoch=trainer.current_epoch)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0 and not _last_epoch(trainer):
            self.rescore(trainer, pl_module, for_epoch=trainer.current_epoch + 1)

    def state_dict(self) -> dict[str, Any]:
        return {"scores": dict(self.scores), "active_ids": self.active_ids,
                "selected_ids": list(self.selected_ids), "rescorings": self.rescorings}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.scores = {int(k): float(v) for k, v in state_dict["scores"].items()}
        self.active_ids = state_dict["active_ids"]
        self.selected_ids = list(state_dict.get("selected_ids", state_dict.get("pruned_ids", [])))
        self.rescorings = state_dict["rescorings"]

    # -- scoring ----------------------------------------------------------------------------

    def rescore(self, trainer: Trainer, pl_module: LightningModule, for_epoch: int = 0) -> list[SeamResult]:
        """Score all of D_rl, select the ``fraction`` (``order`` end), prune or augment, log and write the scores.

        ``for_epoch`` is the epoch that will train on the new selection; it names the scores file.
        Returns the SEAM results (none with ``selection="perplexity"``/``"random"``/``"all"``; the
        perplexities are in ``scores``).
        """
        datamodule = _datamodule(trainer)
        records = datamodule.records("rl")
        self._prepare_sources(trainer)
        results: list[SeamResult] = []
        if self.selection == "seam":
            results = self._score(trainer, pl_module, records)
            self.scores = {r.id: r.seam for r in results}
            selected = select_fraction(self.scores, self.fraction, self.order, what="SEAM score")
        elif self.selection == "perplexity":
            self.scores = self._perplexities(trainer, pl_module, records)
            selected = select_fraction(self.scores, self.fraction, self.order, what="perplexity")
        elif self.selection == "random":
            ids = sorted(r.id for r in records)
            rng = random.Random(mix_seed(self.seed, self.rescorings))
            selected = sorted(rng.sample(ids, selection_size(len(ids), self.fraction)))
        else:
            selected = sorted(r.id for r in records)
        _check_same_on_every_rank(trainer, selected)
        previous, self.selected_ids = set(self.selected_ids), selected
        chosen = set(selected)
        metrics = self._metrics(results, chosen, previous)
        if self.selection == "perplexity":
            metrics.update(_summary("perplexity", self.scores.values()))
        if self.mode == "prune":
            self.active_ids = sorted({r.id for r in records} - chosen)
            datamodule.set_active_rl_ids(self.active_ids)
            metrics["seam/pruned"] = float(len(chosen))
        else:
            metrics.update(self._augment(trainer, datamodule, records, selected))
        self.rescorings += 1

        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})
        action = "pruned" if self.mode == "prune" else "augmented"
        ranked = {"seam": "SEAM", "perplexity": "golden-response perplexity"}.get(self.selection)
        how = f"with the {self.order} {ranked}" if ranked else f"({self.selection} selection)"
        summary = f"[SeamCallback] {action} {len(chosen)} of {len(records)} RL prompts {how}"
        if results:
            summary += (f" (mean SEAM {metrics['seam/mean']:.4g}, RM misjudgement rate "
                        f"{metrics['seam/misjudgement_rate']:.3f})")
        if self.mode == "augment":
            summary += (f"; added {int(metrics['seam/augmented_sft'])} SFT and "
                        f"{int(metrics['seam/augmented_preference'])} preference examples")
        rank_zero_info(summary)
        if self.scores_path and results and trainer.is_global_zero:
            path = self.scores_path.format(epoch=for_epoch)
            write_scores(path, results, records, chosen)
            rank_zero_info(f"[SeamCallback] wrote scores to {Path(path).resolve()}")
        return results

    def _score(self, trainer: Trainer, pl_module: LightningModule, records: list[Record]) -> list[SeamResult]:
        """SEAM of every record: this rank scores its share (minus saved progress); all ranks get all results."""
        datamodule = _datamodule(trainer)
        tokenizer = self._tokenizer(pl_module)
        mine = records[trainer.global_rank::trainer.world_size]
        # Candidates are formatted and truncated exactly as the data module formats training data.
        # Score in the Trainer's precision (e.g. bf16 autocast under precision="bf16-mixed").
        with self._reward_model(pl_module) as reward_model, self._policy_model(pl_module) as policy, \
                trainer.precision_plugin.forward_context():
            self.source.use_reward_model(reward_model, tokenizer)  # e.g. the victim of an adversarial source
            progress = self._scoring_progress(trainer, policy, reward_model, datamodule)
            done = progress.load() if progress is not None else {}
            trainer.strategy.barrier()  # every rank has read the files before any rank appends
            scorer = SeamScorer(policy, reward_model, tokenizer,
                                max_instruction_tokens=datamodule.max_instruction_tokens,
                                max_response_tokens=datamodule.max_response_tokens,
                                token_budget=self.token_budget, prompts_per_chunk=self.chunk_size,
                                progress=self.progress and trainer.is_global_zero)
            reused: list[SeamResult] = []
            fed: list[SeamExample] = []

            def to_score() -> Iterator[SeamExample]:
                for example in self._examples(mine):
                    saved = done.get((example.id, example_key(example)))
                    if saved is not None:
                        reused.append(saved)
                    else:
                        fed.append(example)
                        yield example

            # Results come in input order, a chunk at a time: result i belongs to fed[i].
            scored: list[SeamResult] = []
            unsaved: list[tuple[SeamExample, SeamResult]] = []
            for result in scorer.score(to_score(), total=len(mine)):
                unsaved.append((fed[len(scored)], result))
                scored.append(result)
                if progress is not None and len(unsaved) == self.chunk_size:
                    progress.save(unsaved)
                    unsaved = []
            if progress is not None:
                progress.save(unsaved)
        self.last_scoring = {"reused": len(reused), "scored": len(scored)}
        if reused:
            log.info("SeamCallback: rank %d reused %d saved scores, scored %d", trainer.global_rank,
                     len(reused), len(scored))
        everyone = [r for part in _all_gather_objects(trainer, reused + scored) for r in part]
        order = {r.id: i for i, r in enumerate(records)}
        results = sorted(everyone, key=lambda r: order[r.id])
        if [r.id for r in results] != [r.id for r in records]:
            raise RuntimeError("SeamCallback: the gathered scores do not cover D_rl exactly once")
        return results

    def _perplexities(self, trainer: Trainer, pl_module: LightningModule, records: list[Record]) -> dict[int, float]:
        """Golden-response perplexity of every record (§7's baseline), in record order.

        As in :meth:`_score`, this rank computes its share (records rank, rank + world, …) and
        the shares are gathered, so every rank holds the same numbers and selects the same ids.
        """
        datamodule = _datamodule(trainer)
        mine = records[trainer.global_rank::trainer.world_size]
        with self._perplexity_model(pl_module) as (model, tokenizer), trainer.precision_plugin.forward_context():
            # Formatted and truncated exactly as the data module formats training data.
            formatter = PromptFormatter(tokenizer, datamodule.max_instruction_tokens, datamodule.max_response_tokens)
            budget = self.token_budget or default_token_budget(next(model.parameters()).device)
            examples = [(r.id, r.text["instruction"], r.text["response"]) for r in mine]
            values = golden_perplexities(model, formatter, examples, budget,
                                         progress=self.progress and trainer.is_global_zero)
        everyone = {i: v for part in _all_gather_objects(trainer, values) for i, v in part.items()}
        if sorted(everyone) != sorted(r.id for r in records):
            raise RuntimeError("SeamCallback: the gathered perplexities do not cover D_rl exactly once")
        return {r.id: everyone[r.id] for r in records}

    @contextmanager
    def _perplexity_model(self, pl_module: LightningModule) -> Iterator[tuple[torch.nn.Module, Any]]:
        """(model, tokenizer) of ``selection="perplexity"``: ``perplexity_model``, else the policy SEAM uses."""
        if self.perplexity_model is None:
            with self._policy_model(pl_module) as model:
                yield model, self._tokenizer(pl_module)
            return
        model = self._load("perplexity", partial(load_policy, dtype=self.dtype,
                                                 attn_implementation=self.attn_implementation),
                           self.perplexity_model, pl_module)
        yield model, self._load("perplexity_tokenizer", load_tokenizer, self.perplexity_model, None)

    def _prepare_sources(self, trainer: Trainer) -> None:
        """Rank 0 builds the sources' caches (e.g. the contrast corpus embeddings) first; the others then load them."""
        sources = [self.source] if self.selection == "seam" else []
        if self.mode == "augment":
            sources.append(self.augment_source or self.source)
        if trainer.is_global_zero:
            for source in sources:
                source.prepare()
        trainer.strategy.barrier()
        for source in sources:
            source.prepare()

    def _scoring_progress(self, trainer: Trainer, policy: torch.nn.Module, reward_model: torch.nn.Module,
                          datamodule) -> ScoringProgress | None:
        if not self.save_progress:
            return None
        directory = self.progress_dir or os.path.join(trainer.default_root_dir, "seam_progress")
        fingerprint = run_fingerprint(model_fingerprint(policy), model_fingerprint(reward_model),
                                      datamodule.max_instruction_tokens, datamodule.max_response_tokens,
                                      trainer.precision, self.num_candidates)
        return ScoringProgress(directory, fingerprint, trainer.global_rank)

    def _augment(self, trainer: Trainer, datamodule, records: list[Record], selected: list[int]) -> dict[str, float]:
        """Add contrast-instruction examples for the selected prompts (worst first) to D_p and D_r."""
        by_id = {r.id: r for r in records}
        existing_sft = {(r.text["instruction"], r.text["response"]) for r in datamodule.added["sft"]}
        existing_pref = {(r.text["instruction"], r.text["chosen"], r.text["rejected"])
                         for r in datamodule.added["preference"]}
        new = contrast_augmentations(self.augment_source or self.source, [by_id[i] for i in selected],
                                     self.augmentations_per_prompt, existing_sft, existing_pref)
        datamodule.add_examples("sft", new.sft)
        datamodule.add_examples("preference", new.preference)
        if self.augment_dir and trainer.is_global_zero:
            for kind in ("sft", "preference"):
                write_jsonl_atomic(Path(self.augment_dir) / f"{kind}.jsonl",
                                   [r.text for r in datamodule.added[kind]])
        return {"seam/augmented_sft": float(len(new.sft)), "seam/augmented_preference": float(len(new.preference)),
                "seam/augmented_prompts": float(len(set(new.sources)))}

    def _examples(self, records: list[Record]) -> Iterator[SeamExample]:
        # Candidates are built a chunk at a time so scoring starts early and memory stays flat.
        for start in range(0, len(records), self.chunk_size):
            part = records[start:start + self.chunk_size]
            candidates = self.source.candidates(
                [r.text["instruction"] for r in part], [r.text["response"] for r in part], self.num_candidates
            )
            for record, cands in zip(part, candidates):
                yield SeamExample(record.id, record.text["instruction"], record.text["response"], list(cands))

    def _metrics(self, results: list[SeamResult], selected: set[int], previous: set[int]) -> dict[str, float]:
        metrics = {
            "seam/selected": float(len(selected)),
            "seam/overlap_with_previous": len(selected & previous) / len(selected) if previous and selected else float("nan"),
        }
        if not results:
            return metrics
        seam = torch.tensor([r.seam for r in results], dtype=torch.float64)
        misjudged, loglik = MeanMetric(), MeanMetric()
        for r in results:
            if r.candidate_rewards:
                rewards = torch.tensor(r.candidate_rewards)
                misjudged.update((rewards > r.golden_reward).float())
                loglik.update(torch.tensor(r.candidate_logprob_sums) / torch.tensor(r.candidate_lengths))
        empty = not any(r.candidate_rewards for r in results)
        metrics.update({
            "seam/mean": seam.mean().item(),
            "seam/q50": seam.quantile(0.5).item(),
            "seam/q90": seam.quantile(0.9).item(),
            "seam/max": seam.max().item(),
            "seam/misjudgement_rate": float("nan") if empty else misjudged.compute().item(),
            "seam/candidate_token_loglik": float("nan") if empty else loglik.compute().item(),
            "seam/prompts_without_candidates": float(sum(not r.candidate_rewards for r in results)),
            "seam/selected_share": len(selected) / max(len(results), 1),
        })
        return metrics

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
            yield self._load("policy", partial(load_policy, dtype=self.dtype, attn_implementation=self.attn_implementation),
                             self.reference_policy, pl_module)
        elif callable(getattr(pl_module, "reference", None)):
            with pl_module.reference() as model:
                yield model
        elif getattr(pl_module, "reference_policy", None) is not None:
            yield pl_module.reference_policy
        else:
            raise ValueError("SeamCallback(policy='reference') needs reference_policy=<path of the SFT policy> "
                             f"({type(pl_module).__name__} exposes no reference policy)")

    @contextmanager
    def _reward_model(self, pl_module: LightningModule) -> Iterator[torch.nn.Module]:
        """The RM: ``reward_model`` if given, else the module's (PPO: its `reward()`, which may be the
        value model with its adapters switched off), else the model an RM stage trains."""
        if self.reward_model is not None:
            yield self._load("reward", partial(load_reward_model, dtype=self.dtype,
                                               attn_implementation=self.attn_implementation),
                             self.reward_model, pl_module)
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


def _all_gather_objects(trainer: Trainer, obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (every rank must call this)."""
    if trainer.world_size == 1:
        return [obj]
    gathered: list[Any] = [None] * trainer.world_size
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def _summary(name: str, values) -> dict[str, float]:
    """Mean, median, 90% quantile and maximum of ``values`` as ``<name>/mean`` etc."""
    x = torch.tensor(list(values), dtype=torch.float64)
    if not len(x):
        return {}
    return {f"{name}/mean": x.mean().item(), f"{name}/q50": x.quantile(0.5).item(),
            f"{name}/q90": x.quantile(0.9).item(), f"{name}/max": x.max().item()}


def _check_same_on_every_rank(trainer: Trainer, selected: list[int]) -> None:
    """Fail loudly if ranks ever disagree on a selection (they compute it from the same gathered scores)."""
    digest = hashlib.sha256(json.dumps(selected).encode()).hexdigest()
    if len(set(_all_gather_objects(trainer, digest))) > 1:
        raise RuntimeError("SeamCallback: DDP ranks selected different RL prompts; refusing to train on diverging data")


def write_scores(path: str | Path, results: list[SeamResult], records: list[Record], selected: set[int]) -> Path:
    """Write one row per RL prompt (id, instruction, SEAM, selected, per-candidate terms), atomically.

    ``.parquet`` gives a Parquet file, anything else JSON lines.
    """
    path = Path(path)
    instruction = {r.id: r.text["instruction"] for r in records}
    rows = [{
        "id": r.id, "instruction": instruction[r.id], "seam": r.seam, "selected": r.id in selected,
        "golden_reward": r.golden_reward, "candidate_rewards": r.candidate_rewards,
        "candidate_logprob_sums": r.candidate_logprob_sums, "candidate_lengths": r.candidate_lengths,
    } for r in results]
    if path.suffix != ".parquet":
        return write_jsonl_atomic(path, rows)
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(pa.Table.from_pylist(rows), tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path
