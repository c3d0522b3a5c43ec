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

D_rl comes from the Trainer's DataModule: ``RLHFDataModule``, or any DataModule with
``rl_records()`` and ``set_active_rl_ids()``, or one holding a ``PromptFilter`` (see
:mod:`seam_lightning.seam.rl_data`). Under ``Trainer.predict`` the callback scores once at
the start (what ``seam-lightning score`` runs).

Under DDP each rank scores its share of D_rl (records rank, rank + world, …), the
results are gathered, and every rank takes the same decision from the same
numbers (checked). Each scored chunk is appended to a progress file first, so a
run killed while scoring resumes without scoring anything twice.
"""

from __future__ import annotations

import json
import logging
import os
import random
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from seam_lightning.data.formatting import PromptFormatter, prompt_format
from seam_lightning.data.records import Record
from seam_lightning.jsonl import write_jsonl_atomic
from seam_lightning.models.batching import default_token_budget
from seam_lightning.models.fingerprint import model_fingerprint
from seam_lightning.models.loading import Attention, DType
from seam_lightning.models.mixed_precision import frozen_weights_in_trainer_dtype
from seam_lightning.seam.augment import contrast_augmentations
from seam_lightning.seam.distributed import (all_gather_objects, check_same_on_every_rank, raise_together,
                                             rank_zero_first)
from seam_lightning.seam.perplexity import golden_perplexities
from seam_lightning.seam.progress import ScoringProgress, run_fingerprint
from seam_lightning.seam.report import quantile_summary, selection_metrics
from seam_lightning.seam.rl_data import rl_data_of
from seam_lightning.seam.scorer import SeamResult, SeamScorer
from seam_lightning.seam.scoring_models import ScoringModels
from seam_lightning.seam.scores_file import write_scores
from seam_lightning.seam.sharded_scoring import score_records
from seam_lightning.seam.selection import select_fraction, selection_size
from seam_lightning.seam.sources.base import CandidateSource
from seam_lightning.seam.sources.contrast import ContrastSource
from seam_lightning.seeding import mix_seed

log = logging.getLogger(__name__)


class SeamCallback(Callback):
    """Prune or augment the RL prompts where the reward model and the policy fit each other worst.

    Args:
        source: builds the candidates r* (e.g. ``ContrastSource``).
        mode: ``"prune"`` removes the selected prompts from the RL loader; ``"score"`` only logs
            and writes the scores (e.g. SEAM_GPT's beside a contrast-pruning callback); ``"augment"`` adds
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
            the paper used LLaMa2-7B). Default: the policy SEAM would use (see ``likelihood_from``: π_SFT,
            i.e. ``reference_policy`` or the module's reference, or the module's current policy).
        num_candidates: candidates per prompt, N (paper: 30).
        every_n_epochs: rescore after every n-th training epoch (0, the default: only at fit
            start, since with both models frozen a rescoring computes the same numbers; a
            rescoring whose models, source and D_rl are unchanged is skipped all the same);
            needs ``Trainer(reload_dataloaders_every_n_epochs=1)`` so the next epoch sees the change.
        at_fit_start: score before the first epoch.
        likelihood_from: which policy gives log P_PM(r*|I): ``"reference"`` (π_SFT, the paper's)
            or ``"current"`` (the policy being trained; the online variant). Formerly ``policy``,
            a name that read like a model path; ``policy=`` still works and warns.
        reference_policy: path/name of π_SFT, when the module does not expose ``reference_policy``.
        reward_model: path/name of the RM, when the module does not expose ``reward_model``.
        dtype: weight precision of the models this callback loads itself (``reference_policy``,
            ``reward_model``): ``float32``, ``bfloat16`` or ``float16``.
        attn_implementation: attention of the models this callback loads (``sdpa``, ``eager``,
            ``seam_grouped``, ``flash_attention_2``).
        scores_path: write every scoring (id, instruction, SEAM, per-candidate terms) here;
            ``.parquet`` or ``.jsonl``. ``{epoch}`` in the name becomes the epoch that trains on
            this selection (0 for the scoring at fit start).
        token_budget: tokens per scoring forward pass (rows × padded length); None picks one
            for the device (512 on a CPU, 16384 on a GPU).
        progress: show a progress bar while scoring.
        augmentations_per_prompt: contrast examples per selected prompt (paper: 5).
        augment_source: where augmentations come from (default: ``source``, which must then
            be a ``ContrastSource``).
        augment_dir: also write every augmented example so far to ``sft.jsonl`` and
            ``preference.jsonl`` here (atomically), for a later stage's data module.
        prompts_per_chunk: prompts whose candidates are built, scored and saved together (as
            :class:`SeamScorer` calls it; formerly ``chunk_size``, which still works and warns).
        save_progress: append each scored chunk to a progress file and reuse it on a rerun.
        progress_dir: where progress files go (default ``<default_root_dir>/seam_progress``).
        seed: seed of ``selection="random"`` (each rescoring draws anew).
        name: tells several SeamCallbacks of one Trainer apart in checkpoints (their
            ``state_key``; Lightning refuses two with the same key); default: built from mode,
            selection, source class and fraction.
        prepare_timeout_minutes: how long the other ranks wait for rank 0 to build the
            sources' caches (e.g. embedding a large contrast corpus), independent of the
            process group's timeout.
        cast_frozen_weights_once: under mixed precision, hold the scoring models' frozen linear
            weights in autocast's dtype while scoring instead of letting autocast cast them at
            every forward (the same numbers; costs a bf16 copy of them meanwhile; off under FSDP).
    """

    def __init__(
        self,
        source: CandidateSource,
        mode: Literal["prune", "augment", "score"] = "prune",
        fraction: float = 0.2,
        selection: Literal["seam", "perplexity", "random", "all"] = "seam",
        order: Literal["largest", "smallest"] = "largest",
        perplexity_model: str | None = None,
        num_candidates: int = 30,
        every_n_epochs: int = 0,
        at_fit_start: bool = True,
        likelihood_from: Literal["reference", "current"] = "reference",
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
        prompts_per_chunk: int = 64,
        save_progress: bool = True,
        progress_dir: str | None = None,
        seed: int = 0,
        name: str | None = None,
        prepare_timeout_minutes: float = 240.0,
        cast_frozen_weights_once: bool = True,
        policy: Literal["reference", "current"] | None = None,
        chunk_size: int | None = None,
    ):
        likelihood_from = _renamed("policy", policy, "likelihood_from", likelihood_from)
        prompts_per_chunk = _renamed("chunk_size", chunk_size, "prompts_per_chunk", prompts_per_chunk)
        if mode not in ("prune", "augment", "score"):
            raise ValueError(f"SeamCallback mode must be 'prune', 'augment' or 'score', got {mode!r}")
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
        if prompts_per_chunk < 1:
            raise ValueError(f"prompts_per_chunk must be >= 1, got {prompts_per_chunk}")
        if augmentations_per_prompt < 1:
            raise ValueError(f"augmentations_per_prompt must be >= 1, got {augmentations_per_prompt}")
        if mode == "augment" and augment_source is None and not isinstance(source, ContrastSource):
            raise ValueError("SeamCallback(mode='augment') builds contrast-instruction examples: give "
                             f"augment_source=ContrastSource(...) (the source is a {type(source).__name__})")
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
        if num_candidates < 1 or every_n_epochs < 0:
            raise ValueError("num_candidates must be >= 1 and every_n_epochs >= 0")
        if likelihood_from not in ("reference", "current"):
            raise ValueError(f"likelihood_from must be 'reference' or 'current', got {likelihood_from!r}")
        self.source = source
        self.mode = mode
        self.fraction = fraction
        self.selection = selection
        self.order = order
        self.num_candidates = num_candidates
        self.every_n_epochs = every_n_epochs
        self.at_fit_start = at_fit_start
        self.scores_path = scores_path
        self.token_budget = token_budget
        self.progress = progress
        self.augmentations_per_prompt = augmentations_per_prompt
        self.augment_source = augment_source
        self.augment_dir = augment_dir
        self.prompts_per_chunk = prompts_per_chunk
        self.save_progress = save_progress
        self.progress_dir = progress_dir
        self.seed = seed
        self.name = name
        self.prepare_timeout_minutes = prepare_timeout_minutes
        self.cast_frozen_weights_once = cast_frozen_weights_once
        self._datamodule = None  # the Trainer's, kept from `setup` so a restored selection can be applied
        self.last_results: list[SeamResult] = []  # the latest scoring's results (not saved in checkpoints)
        self._restore_pending = False
        self._models = ScoringModels(likelihood_from, reference_policy, reward_model, perplexity_model, dtype,
                                     attn_implementation)
        # State saved in checkpoints (the augmented examples live in the data module's state).
        # `scores`: the values the latest selection ranked (SEAM, or perplexity with selection="perplexity").
        self.scores: dict[int, float] = {}
        self.active_ids: list[int] | None = None
        self.selected_ids: list[int] = []
        self.rescorings = 0
        # What decided the latest scoring (models, source, D_rl): an unchanged rescoring is skipped.
        self.scored_fingerprint: str | None = None
        # This rank's share of the latest scoring: prompts whose saved score was reused / newly scored.
        self.last_scoring = {"reused": 0, "scored": 0}

    # The models it scores with: their settings live in ScoringModels alone, read here.
    likelihood_from = property(lambda self: self._models.likelihood_from)
    reference_policy = property(lambda self: self._models.reference_policy_path)
    reward_model = property(lambda self: self._models.reward_model_path)
    perplexity_model = property(lambda self: self._models.perplexity_model_path)
    dtype = property(lambda self: self._models.dtype)
    attn_implementation = property(lambda self: self._models.attn_implementation)

    @property
    def pruned_ids(self) -> list[int]:
        """The RL ids removed from training (empty in augment mode)."""
        return self.selected_ids if self.mode == "prune" else []

    # -- Lightning hooks --------------------------------------------------------------------

    @property
    def state_key(self) -> str:
        # One entry per callback in a checkpoint, so several SeamCallbacks can share a Trainer.
        return self._generate_state_key(name=self.name or f"{self.mode}-{self.selection}-"
                                        f"{type(self.source).__name__}-{self.fraction}")

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit" and self.every_n_epochs > 0 and trainer.reload_dataloaders_every_n_epochs != 1:
            raise ValueError(
                "SeamCallback(every_n_epochs>0) changes the RL set between epochs: "
                "set Trainer(reload_dataloaders_every_n_epochs=1), or every_n_epochs=0 to score only at fit start"
            )
        pruning = [c for c in trainer.callbacks if isinstance(c, SeamCallback) and c.mode == "prune"]
        if len(pruning) > 1:
            raise ValueError("one Trainer can take one pruning SeamCallback (a second would overwrite its RL set); "
                             "give the others mode='score' to log and write their scores beside it")
        rl_data_of(trainer.datamodule)  # fails early, naming what the DataModule lacks
        if self.mode == "augment" and not callable(getattr(trainer.datamodule, "add_examples", None)):
            raise TypeError("SeamCallback(mode='augment') adds examples to the SFT and preference sets: it needs "
                            f"RLHFDataModule (or add_examples/added like it), not {type(trainer.datamodule).__name__}")
        self._datamodule = trainer.datamodule

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.rescorings:
            return  # resumed: the restored selection is applied already (load_state_dict)
        if trainer.strategy.restore_checkpoint_after_setup:
            # FSDP/DeepSpeed restore callbacks after on_fit_start (and only then set trainer.ckpt_path,
            # so it cannot tell a resume here): wait for the saved state, if any.
            self._restore_pending = True
        elif self.at_fit_start:
            self.rescore(trainer, pl_module, for_epoch=trainer.current_epoch)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._restore_pending:
            return
        self._restore_pending = False
        if self.rescorings or not self.at_fit_start:
            return  # the checkpoint held this callback's state: nothing to score
        # The checkpoint held no state of this callback: score now, and have the fit loop build
        # the train loader again before the first batch (private API: no public hook lies between
        # a late restore and the loader being built).
        self.rescore(trainer, pl_module, for_epoch=trainer.current_epoch)
        trainer.fit_loop._combined_loader = None

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # `Trainer.predict` is how a scoring job without training runs (``seam-lightning score``).
        self.rescore(trainer, pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0 and not _last_epoch(trainer):
            self.rescore(trainer, pl_module, for_epoch=trainer.current_epoch + 1)

    def state_dict(self) -> dict[str, Any]:
        return {"scores": dict(self.scores), "active_ids": self.active_ids, "selected_ids": list(self.selected_ids),
                "rescorings": self.rescorings, "scored_fingerprint": self.scored_fingerprint}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.scores = {int(k): float(v) for k, v in state_dict["scores"].items()}
        self.active_ids = state_dict["active_ids"]
        self.selected_ids = list(state_dict.get("selected_ids", state_dict.get("pruned_ids", [])))
        self.rescorings = state_dict["rescorings"]
        self.scored_fingerprint = state_dict.get("scored_fingerprint")
        # The callback owns the active RL set; the data module only applies it. Loaded before
        # the train loader is built (for every strategy), so the resumed epoch sees it.
        if self.mode == "prune" and self._datamodule is not None:
            rl_data_of(self._datamodule).set_active_rl_ids(self.active_ids)

    # -- scoring ----------------------------------------------------------------------------

    def rescore(self, trainer: Trainer, pl_module: LightningModule, for_epoch: int = 0) -> list[SeamResult]:
        """Score all of D_rl, select the ``fraction`` (``order`` end), prune or augment, log and write the scores.

        ``for_epoch`` is the epoch that will train on the new selection; it names the scores file.
        Returns the SEAM results (none with ``selection="perplexity"``/``"random"``/``"all"``; the
        perplexities are in ``scores``).
        """
        rl_data = rl_data_of(trainer.datamodule)
        records = rl_data.rl_records()
        self._prepare_sources(trainer)  # first: preparing may complete the source's configuration
        fingerprint = None
        if self.selection in ("seam", "perplexity"):
            fingerprint = self._scoring_fingerprint(trainer, pl_module, records)
            if self.rescorings and fingerprint == self.scored_fingerprint:
                rank_zero_info("[SeamCallback] models, source and RL set unchanged since the last scoring: "
                               "keeping its selection")
                return []
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
        check_same_on_every_rank(trainer, selected)
        previous, self.selected_ids = set(self.selected_ids), selected
        chosen = set(selected)
        metrics = selection_metrics(results, chosen, previous)
        if self.selection == "perplexity":
            metrics.update(quantile_summary("perplexity", self.scores.values()))
        if self.mode == "prune":
            self.active_ids = sorted({r.id for r in records} - chosen)
            rl_data.set_active_rl_ids(self.active_ids)
            metrics["seam/pruned"] = float(len(chosen))
        elif self.mode == "augment":
            metrics.update(self._augment(trainer, trainer.datamodule, records, selected))
        self.scored_fingerprint = fingerprint
        self.rescorings += 1
        self.last_results = results

        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})
        action = {"prune": "pruned", "augment": "augmented", "score": "selected (not applied)"}[self.mode]
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
        tokenizer = self._models.tokenizer(pl_module)
        # Candidates are formatted and truncated exactly as the data module formats training data.
        # Score in the Trainer's precision (e.g. bf16 autocast under precision="bf16-mixed").
        with self._models.reward_model(pl_module) as reward_model, self._models.policy(pl_module) as policy, \
                trainer.precision_plugin.forward_context():
            self.source.use_reward_model(reward_model, tokenizer)  # e.g. the victim of an adversarial source
            scorer = SeamScorer(policy, reward_model, tokenizer, **prompt_format(trainer.datamodule),
                                token_budget=self.token_budget, prompts_per_chunk=self.prompts_per_chunk,
                                progress=False)
            progress = self._scoring_progress(trainer, policy, reward_model)  # of the weights as loaded
            with frozen_weights_in_trainer_dtype(trainer, policy, reward_model, enabled=self.cast_frozen_weights_once):
                results, counts = score_records(trainer, records, self.source, scorer, self.num_candidates,
                                                self.prompts_per_chunk, progress, show_progress=self.progress)
        self.last_scoring = {"reused": counts.reused, "scored": counts.scored}
        return results

    def _perplexities(self, trainer: Trainer, pl_module: LightningModule, records: list[Record]) -> dict[int, float]:
        """Golden-response perplexity of every record (§7's baseline), in record order.

        As in :meth:`_score`, this rank computes its share (records rank, rank + world, …) and
        the shares are gathered, so every rank holds the same numbers and selects the same ids.
        """
        mine = records[trainer.global_rank::trainer.world_size]
        with self._models.perplexity_model(pl_module) as (model, tokenizer), \
                trainer.precision_plugin.forward_context(), \
                frozen_weights_in_trainer_dtype(trainer, model, enabled=self.cast_frozen_weights_once):
            # Formatted and truncated exactly as the data module formats training data.
            formatter = PromptFormatter(tokenizer, **prompt_format(trainer.datamodule))
            budget = self.token_budget or default_token_budget(next(model.parameters()).device)
            examples = [(r.id, r.text["instruction"], r.text["response"]) for r in mine]
            values, error = {}, None
            try:
                values = golden_perplexities(model, formatter, examples, budget,
                                             progress=self.progress and trainer.is_global_zero)
            except Exception as e:  # e.g. a NaN: every rank stops with it instead of waiting in the gather
                error = e
            raise_together(trainer, error)
        everyone = {i: v for part in all_gather_objects(trainer, values) for i, v in part.items()}
        if sorted(everyone) != sorted(r.id for r in records):
            raise RuntimeError("SeamCallback: the gathered perplexities do not cover D_rl exactly once")
        return {r.id: everyone[r.id] for r in records}

    def _prepare_sources(self, trainer: Trainer) -> None:
        """Rank 0 builds the sources' caches (e.g. the contrast corpus embeddings) first; the others then load them."""
        sources = [self.source] if self.selection == "seam" else []
        if self.mode == "augment":
            sources.append(self.augment_source or self.source)

        def prepare() -> None:
            for source in sources:
                source.prepare()

        if sources:
            rank_zero_first(trainer, prepare, timedelta(minutes=self.prepare_timeout_minutes))

    def _scoring_fingerprint(self, trainer: Trainer, pl_module: LightningModule, records: list[Record]) -> str:
        """What a scoring's outcome depends on: both models' weights, the source, the settings and D_rl."""
        data = [(r.id, r.text["instruction"], r.text["response"]) for r in records]
        if self.selection == "perplexity":
            with self._models.perplexity_model(pl_module) as (model, _):
                models = [model_fingerprint(model)]
        else:
            with self._models.reward_model(pl_module) as reward_model, self._models.policy(pl_module) as policy:
                models = [model_fingerprint(policy), model_fingerprint(reward_model)]
        return run_fingerprint(*models, json.dumps(self.source.config(), sort_keys=True), self.selection,
                               self.order, self.num_candidates, trainer.precision, json.dumps(data))

    def _scoring_progress(self, trainer: Trainer, policy: torch.nn.Module,
                          reward_model: torch.nn.Module) -> ScoringProgress | None:
        if not self.save_progress:
            return None
        directory = self.progress_dir or os.path.join(trainer.default_root_dir, "seam_progress")
        fingerprint = run_fingerprint(model_fingerprint(policy), model_fingerprint(reward_model),
                                      json.dumps(prompt_format(trainer.datamodule), sort_keys=True),
                                      trainer.precision, self.num_candidates,
                                      json.dumps(self.source.config(), sort_keys=True))
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


def _last_epoch(trainer: Trainer) -> bool:
    """True when no training epoch follows this one (a rescoring now would serve nothing)."""
    loop = trainer.fit_loop
    max_epochs = loop.max_epochs if loop.max_epochs is not None and loop.max_epochs >= 0 else None
    steps_done = loop.max_steps >= 0 and trainer.global_step >= loop.max_steps
    return trainer.should_stop or steps_done or (max_epochs is not None and trainer.current_epoch + 1 >= max_epochs)


def _renamed(old_name: str, old_value: Any, new_name: str, new_value: Any) -> Any:
    """The value of a renamed argument: the old name still works (with a FutureWarning) for a while."""
    if old_value is None:
        return new_value
    warnings.warn(f"SeamCallback({old_name}=...) is deprecated; use {new_name}=... instead",
                  FutureWarning, stacklevel=3)
    return old_value
