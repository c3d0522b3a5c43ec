"""RLHFDataModule: one DataModule for the SFT, reward-model and RL stages.

It owns three data sets — D_p (instruction, response) for SFT, D_r (instruction,
chosen, rejected) for the reward model and D_rl (instruction, golden response)
for RL and SEAM — each with an optional validation split. The LightningModule
being trained says which one it needs through its ``data_stage`` attribute and
lends its tokenizer; the user wires nothing by hand.

Between epochs the SEAM callback may narrow the active RL set (by stable id) and
add augmented SFT/preference examples. The added examples are part of this
module's ``state_dict``; the active set is the callback's state, which it applies
again on resume, so a resumed run continues with the same data. Loaders are rebuilt each epoch when
the Trainer has ``reload_dataloaders_every_n_epochs=1``.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from functools import partial
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from seam_lightning.data.collate import collate_preference, collate_rl, collate_sft
from seam_lightning.data.formatting import Overlong, PromptFormatter, check_template, prompt_format
from seam_lightning.data.records import DataError, DataSource, Record, load_records
from seam_lightning.data.sampling import EpochShuffleSampler

DataStage = Literal["sft", "preference", "rl"]

FIELDS: dict[str, tuple[str, ...]] = {
    "sft": ("instruction", "response"),
    "preference": ("instruction", "chosen", "rejected"),
    "rl": ("instruction", "response"),
}
COLLATE = {"sft": collate_sft, "preference": collate_preference, "rl": collate_rl}


class RLHFDataModule(LightningDataModule):
    """D_p, D_r and D_rl from JSONL, Parquet or `datasets` sources (``demo://`` names the bundled demo set).

    Args:
        sft, preference, rl: training sources of D_p, D_r, D_rl (None when unused).
        sft_val, preference_val, rl_val: validation sources (None: no validation).
        sft_augmented, preference_augmented: extra training examples appended to D_p / D_r and
            marked ``augmented`` (e.g. the files SeamCallback(mode="augment", augment_dir=…)
            wrote during another stage).
        batch_size: examples per training batch and device (a preference batch holds this many
            pairs); under DDP the global batch is ``batch_size × world size``.
        eval_batch_size: examples per validation batch (default: ``batch_size``).
        max_instruction_tokens: limit on the instruction's own tokens (the template is extra).
        max_response_tokens: limit on each response (response, chosen, rejected), EOS included.
        prompt_template: a plain prompt template with ``{instruction}``, used instead of the
            tokenizer's chat template, e.g. StackLLaMA's ``"Question: {instruction}\n\nAnswer: "``
            (the paper's setup). None: the chat template (or a plain one when the tokenizer has none).
        system_prompt: a system turn before every prompt (None: none).
        overlong: ``"truncate"`` keeps the first tokens of an over-long field (a cut response
            gets no EOS); ``"drop"`` skips the example. Counts are logged either way.
        num_workers: DataLoader workers.
        seed: shuffling seed; epoch e of a split is always in the same order for a given
            seed, and a run resumed mid-epoch continues with the batches it had not seen.
        drop_last: drop an epoch's last partial training batch, so every step sees
            ``batch_size`` examples (e.g. every PPO step the same number of prompts, whatever
            share SEAM pruned). Fewer examples than one batch is then an error.
        allow_changed_data: resume from a checkpoint although the RL set's ids or texts differ
            from those it was written with (e.g. the file was rebuilt), with a warning instead of
            a ValueError. The checkpoint's SEAM state names RL examples by id, so those ids may now
            name other prompts. Not saved with the hyperparameters, so it never sticks.
    """

    def __init__(
        self,
        sft: DataSource | None = DataSource("demo://sft_train"),
        sft_val: DataSource | None = DataSource("demo://sft_val"),
        preference: DataSource | None = DataSource("demo://preference_train"),
        preference_val: DataSource | None = DataSource("demo://preference_val"),
        rl: DataSource | None = DataSource("demo://rl_train"),
        rl_val: DataSource | None = DataSource("demo://rl_val"),
        sft_augmented: DataSource | None = None,
        preference_augmented: DataSource | None = None,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        max_instruction_tokens: int = 128,
        max_response_tokens: int = 192,
        prompt_template: str | None = None,
        system_prompt: str | None = None,
        overlong: Overlong = "truncate",
        num_workers: int = 0,
        seed: int = 0,
        drop_last: bool = False,
        allow_changed_data: bool = False,
    ):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if overlong not in ("truncate", "drop"):
            raise ValueError(f"overlong must be 'truncate' or 'drop', got {overlong!r}")
        check_template(prompt_template)
        self.save_hyperparameters(ignore=["allow_changed_data"])
        self.allow_changed_data = allow_changed_data
        self.sources = {"sft": sft, "sft_val": sft_val, "preference": preference,
                        "preference_val": preference_val, "rl": rl, "rl_val": rl_val}
        self.augmented_sources = {"sft": sft_augmented, "preference": preference_augmented}
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.max_instruction_tokens = max_instruction_tokens
        self.max_response_tokens = max_response_tokens
        self.prompt_template = prompt_template
        self.system_prompt = system_prompt
        self.overlong = overlong
        self.num_workers = num_workers
        self.seed = seed
        self.drop_last = drop_last
        self.stage: DataStage | None = None
        self.formatter: PromptFormatter | None = None
        self.stats: Counter[str] = Counter()
        self._records: dict[str, list[Record]] = {}
        self._examples: dict[str, list[dict[str, Any]]] = {}
        # Changed by the SEAM callback; saved in checkpoints.
        self.active_rl_ids: set[int] | None = None
        self.added: dict[str, list[Record]] = {"sft": [], "preference": []}

    # -- wiring -----------------------------------------------------------------------------

    def connect(self, tokenizer: PreTrainedTokenizerBase, stage: DataStage) -> None:
        """Use ``tokenizer`` and serve the loaders of ``stage`` (done by :meth:`setup` under a Trainer)."""
        if stage not in FIELDS:
            raise ValueError(f"data stage must be one of {list(FIELDS)}, got {stage!r}")
        if self.formatter is None or self.formatter.tokenizer is not tokenizer:
            self.formatter = PromptFormatter(tokenizer, **prompt_format(self))
            self._examples.clear()
        self.stage = stage

    def prepare_data(self) -> None:
        """Build the demo data and bundled models this run reads, once per node, before any rank's ``setup``.

        Lightning calls this on one process per node and holds the other ranks at a
        barrier until it returns, so they find the files in the cache (see
        :func:`seam_lightning.cache.cache_root`) instead of all building them at once.
        Nothing is loaded here, since state set in this hook would exist on one process
        only: ``setup`` reads the data on every rank, and still builds lazily whatever
        this did not build, e.g. when it is called directly without a Trainer.
        """
        # Imported here, as records.py does: plain-file users never need the builders.
        from seam_lightning.data.demo import resolve_demo_uri
        from seam_lightning.models.bundled import bundled_model_dir

        for uri in self._demo_uris():
            resolve_demo_uri(uri)  # builds every split when any is missing
        for name in self._bundled_model_names():
            bundled_model_dir(name)  # dequantises into the cache on first use

    def _demo_uris(self) -> list[str]:
        """The valid ``demo://<split>`` paths among the sources (a bad one is left for ``setup`` to report)."""
        from seam_lightning.data.demo import DEMO_SCHEME, DEMO_SPLITS

        sources = [*self.sources.values(), *self.augmented_sources.values()]
        return [s.path for s in sources
                if s is not None and s.path.startswith(DEMO_SCHEME) and s.path[len(DEMO_SCHEME):] in DEMO_SPLITS]

    def _bundled_model_names(self) -> set[str]:
        """``bundled:`` models named by the Trainer's module (hyperparameters) and callbacks (attributes).

        Every rank loads them. The module's are usually in the cache already (its
        constructor loads their tokenizer); a callback's (e.g.
        ``SeamCallback(reference_policy=...)``) would otherwise be dequantised by every
        rank at once when it first scores. Only models dequantised into the cache count:
        bundled encoders are read straight from their package.
        """
        from seam_lightning.models.bundled import BUNDLED_MODELS, BUNDLED_SCHEME

        trainer = self.trainer
        if trainer is None:
            return set()
        module = trainer.lightning_module
        settings = [dict(module.hparams)] if module is not None else []
        settings += [getattr(callback, "__dict__", {}) for callback in trainer.callbacks]  # __slots__: none
        names = {BUNDLED_SCHEME + key for key in BUNDLED_MODELS}
        return {value for values in settings for value in values.values() if isinstance(value, str) and value in names}

    def setup(self, stage: str | None = None) -> None:
        module = self.trainer.lightning_module if self.trainer is not None else None
        if module is not None:
            for attr in ("tokenizer", "data_stage"):
                if not hasattr(module, attr):
                    raise TypeError(f"{type(module).__name__} needs a `{attr}` attribute to use RLHFDataModule")
            self.connect(module.tokenizer, module.data_stage)
        if self.stage is None:
            raise RuntimeError("RLHFDataModule.setup: call connect(tokenizer, stage) first or run under a Trainer")
        self._load_augmented_sources()
        for split in (self.stage, f"{self.stage}_val"):
            if self.sources[split] is not None:
                self.examples(split)
        summary = ", ".join(f"{k}={v}" for k, v in sorted(self.stats.items()) if v) or "none"
        rank_zero_info(f"[RLHFDataModule] over-long fields ({self.overlong}): {summary}")

    # -- data -------------------------------------------------------------------------------

    def _load_augmented_sources(self) -> None:
        # Once: they become part of `added`, which checkpoints carry (a resumed run gets them from there).
        for kind, source in self.augmented_sources.items():
            if source is not None and not any(r.origin.startswith(f"{source.path} #") for r in self.added[kind]):
                records = load_records(source, FIELDS[kind])
                self.add_examples(kind, [r.text for r in records], origin=source.path)

    def records(self, split: str) -> list[Record]:
        """Validated raw records of a split (``"sft"``, ``"sft_val"``, ``"rl"``, …), read once."""
        if split not in self._records:
            source = self.sources.get(split)
            if source is None:
                raise DataError(f"no data source configured for {split!r}")
            self._records[split] = load_records(source, FIELDS[split.removesuffix("_val")])
        return self._records[split]

    def examples(self, split: str) -> list[dict[str, Any]]:
        """Tokenized examples of a split (augmented ones included for training splits), built once."""
        if split not in self._examples:
            examples = self._tokenize(split, self.records(split), augmented=False)
            examples += self._tokenize(split, self.added.get(split, []), augmented=True)
            if not examples:
                raise DataError(f"{self.sources[split].path}: every example was dropped as over-long (limits: "
                                f"{self.max_instruction_tokens} instruction / {self.max_response_tokens} response tokens)")
            self._examples[split] = examples
        return self._examples[split]

    def _tokenize(self, split: str, records: list[Record], augmented: bool) -> list[dict[str, Any]]:
        if self.formatter is None:
            raise RuntimeError("RLHFDataModule: no tokenizer yet; call connect() or run under a Trainer")
        kind = split.removesuffix("_val")
        examples = []
        for record in records:
            prompt = self.formatter.prompt_ids(record.text["instruction"])
            parts = {"prompt_ids": prompt}
            for name in FIELDS[kind][1:]:
                parts[f"{name}_ids"] = self.formatter.response_ids(record.text[name])
            cut = [name for name, part in parts.items() if part.truncated]
            for name in cut:
                self.stats[f"{split}.{name.removesuffix('_ids')}_truncated"] += 1
            if cut and self.overlong == "drop":
                self.stats[f"{split}.dropped"] += 1
                continue
            example = {"id": record.id, "augmented": augmented}
            example.update({name: part.ids for name, part in parts.items()})
            example.update(record.text)
            examples.append(example)
        return examples

    # -- SEAM hooks -------------------------------------------------------------------------

    def rl_records(self) -> list[Record]:
        """The RL prompts with their stable ids (SeamCallback's side of the data; see ``seam.rl_data``)."""
        return self.records("rl")

    def set_active_rl_ids(self, ids: set[int] | list[int] | None) -> None:
        """Restrict the RL training loader to these example ids (None: all)."""
        if ids is not None:
            known = {r.id for r in self.records("rl")}
            unknown = set(ids) - known
            if unknown:
                raise ValueError(f"unknown RL example ids: {sorted(unknown)[:10]}")
            ids = set(ids)
        self.active_rl_ids = ids

    def add_examples(self, kind: Literal["sft", "preference"], texts: list[dict[str, str]],
                     origin: str = "augmented") -> list[int]:
        """Add augmented examples to D_p or D_r; they reach the next epoch's loader. Returns their ids.

        Ids continue after the split's own records (and earlier additions); ``origin`` is
        kept in each record's provenance.
        """
        if kind not in self.added:
            raise ValueError(f"examples can be added to 'sft' or 'preference', not {kind!r}")
        existing = (self.records(kind) if self.sources[kind] is not None else []) + self.added[kind]
        next_id = max((r.id for r in existing), default=-1) + 1
        new = []
        for offset, text in enumerate(texts):
            missing = [f for f in FIELDS[kind] if not isinstance(text.get(f), str) or not text[f].strip()]
            if missing:
                raise DataError(f"{origin} {kind} example {offset}: missing or empty field(s) {missing}")
            new.append(Record(next_id + offset, {f: text[f] for f in FIELDS[kind]}, f"{origin} #{next_id + offset}"))
        self.added[kind].extend(new)
        self._examples.pop(kind, None)
        return [r.id for r in new]

    def state_dict(self) -> dict[str, Any]:
        # The active RL set is not saved here: SeamCallback owns it and applies it again on resume.
        return {
            "added": {k: [{"id": r.id, "text": r.text, "origin": r.origin} for r in v] for k, v in self.added.items()},
            # What the ids above (and SEAM's state) refer to; None when the run never read an RL set.
            "rl_data": self._rl_data() if "rl" in self._records else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_rl_data(state)
        self.added = {"sft": [], "preference": []}
        self.added.update({k: [Record(r["id"], r["text"], r.get("origin", f"augmented #{r['id']}")) for r in v]
                           for k, v in state.get("added", {}).items()})
        self._examples.clear()

    def _rl_data(self) -> dict[str, str] | None:
        """The RL set's source and fingerprint (read now if not yet); None when no RL source is configured."""
        source = self.sources["rl"]
        if source is None:
            return None
        return {"source": source.path, "fingerprint": rl_data_fingerprint(self.records("rl"))}

    def _check_rl_data(self, state: dict[str, Any]) -> None:
        """Raise (warn, with ``allow_changed_data``) unless the RL set is the one the checkpoint was written with.

        Under a Trainer ``setup`` has read the set already (Lightning restores the data
        module's state after the setup hook); otherwise it is read here.
        """
        if "rl_data" not in state:
            if "rl" in self._records:
                rank_zero_warn("RLHFDataModule: this checkpoint records no fingerprint of its RL data set (it "
                               "predates them), so the RL ids it holds cannot be checked; resuming anyway")
            return
        saved = state["rl_data"]
        if saved is None:  # the run that wrote it never read an RL set: nothing in it refers to one
            return
        current = self._rl_data()
        if current is not None and current["fingerprint"] == saved["fingerprint"]:
            return
        now = f"{current['source']!r} (fingerprint {current['fingerprint'][:12]})" if current else "no RL set"
        message = (f"RLHFDataModule: the RL data set differs from the one the checkpoint was written with: "
                   f"checkpoint {saved['source']!r} (fingerprint {saved['fingerprint'][:12]}), now {now}. "
                   "Its state names RL examples by id (the SEAM-pruned active set), which would now be other "
                   "prompts or none.")
        if self.allow_changed_data:
            rank_zero_warn(f"{message} Resuming anyway (allow_changed_data=True).")
            return
        raise ValueError(f"{message} To resume on the new data anyway, pass allow_changed_data=True "
                         "(in the CLI: --data.allow_changed_data true).")

    # -- loaders ----------------------------------------------------------------------------

    def train_dataloader(self) -> DataLoader:
        examples = self.examples(self.stage)
        if self.stage == "rl" and self.active_rl_ids is not None:
            examples = [e for e in examples if e["id"] in self.active_rl_ids]
            if not examples:
                raise DataError("no active RL examples left to train on (every id was pruned or dropped)")
        world = self.trainer.world_size if self.trainer else 1
        if self.drop_last and len(examples) < self.batch_size * world:
            raise DataError(f"drop_last: {len(examples)} {self.stage} training examples make no full batch of "
                            f"{self.batch_size} per device × {world} device(s)")
        return self._loader(examples, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        split = f"{self.stage}_val"
        if self.sources[split] is None:
            return []
        return self._loader(self.examples(split), self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The training split of the current stage, in file order, unshuffled (what a scoring job reads)."""
        return self._loader(self.examples(self.stage), self.eval_batch_size, shuffle=False)

    def _loader(self, examples: list[dict[str, Any]], batch_size: int, shuffle: bool) -> DataLoader:
        # Only training loaders (shuffle=True) drop a partial batch; evaluation sees every example.
        collate = partial(COLLATE[self.stage], pad_id=self.formatter.tokenizer.pad_token_id)
        sampler = None
        if shuffle:
            # Each rank takes its share of one global order (see EpochShuffleSampler).
            world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
            sampler = EpochShuffleSampler(len(examples), self.seed, num_replicas=world, rank=rank)
            sampler.skip(self._consumed_before_restart() * batch_size)
        # Its own generator: building the iterator must not draw from the global random stream.
        return DataLoader(examples, batch_size=batch_size, sampler=sampler, collate_fn=collate,
                          num_workers=self.num_workers, generator=torch.Generator().manual_seed(self.seed),
                          drop_last=shuffle and self.drop_last)

    def _consumed_before_restart(self) -> int:
        """Training batches of the current epoch already processed, when resuming mid-epoch; else 0."""
        trainer = self.trainer
        if trainer is None or not trainer.fit_loop.restarting:
            return 0
        return trainer.fit_loop.epoch_loop.batch_progress.current.processed


def rl_data_fingerprint(records: list[Record]) -> str:
    """sha256 over the sorted (id, instruction, response) of an RL set: changes when any id or text does."""
    rows = sorted((r.id, r.text["instruction"], r.text["response"]) for r in records)
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode("utf-8")).hexdigest()
