"""``seam-lightning score``: SEAM for any trainer — score an RL data set, split it, report.

    seam-lightning score --config seam_lightning/configs/score.yaml
    seam-lightning score --data.path prompts.jsonl --policy runs/sft/export \\
        --reward_model runs/reward/export --source.class_path seam_lightning.ContrastSource \\
        --source.init_args.corpus.path sft.jsonl --fraction 0.2 --output_dir runs/score

It scores every prompt of the RL set with SEAM (the same :class:`SeamCallback` code a
training run uses, under ``Trainer.predict``, so any number of devices and nodes shard
the work and take the same decision), selects the ``fraction`` with the largest SEAM
(ties by id), and writes into ``output_dir``:

- ``scores.parquet`` (or ``.jsonl``): a row per prompt with every candidate's text,
  reward, log-prob sum and length;
- ``kept.<ext>`` and ``pruned.<ext>``: the input's own rows, format and columns, in input
  order (a folder for a `datasets` source), so TRL or verl reads the kept file as it read
  the original;
- ``report.md`` with ``seam_distribution.png`` and ``candidates.png``;
- ``progress/``: each scored chunk, so a rerun after a crash scores only what is missing.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from jsonargparse import ActionConfigFile, ArgumentParser
from lightning.pytorch import Trainer, seed_everything

from seam_lightning.data.datamodule import RLHFDataModule
from seam_lightning.data.records import DataSource
from seam_lightning.data.subsets import subset_suffix, write_subsets
from seam_lightning.files import write_json
from seam_lightning.models.loading import Attention, DType, Quantization
from seam_lightning.modules.scoring import ScoringModule
from seam_lightning.seam.callback import SeamCallback
from seam_lightning.seam.report import summary_numbers, write_report
from seam_lightning.seam.scores_file import write_scores
from seam_lightning.seam.sources.base import CandidateSource


@dataclass(frozen=True)
class Devices:
    """Where the scoring runs (the Trainer's arguments of the same names)."""

    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str | None = None


def score(
    data: DataSource,
    policy: str,
    reward_model: str,
    source: CandidateSource,
    output_dir: str = "runs/score",
    fraction: float = 0.2,
    selection: Literal["seam", "perplexity", "random"] = "seam",
    order: Literal["largest", "smallest"] = "largest",
    num_candidates: int = 30,
    dtype: DType = "float32",
    quantization: Quantization | None = None,
    attn_implementation: Attention = "sdpa",
    max_instruction_tokens: int = 128,
    max_response_tokens: int = 192,
    prompt_template: str | None = None,
    system_prompt: str | None = None,
    token_budget: int | None = None,
    prompts_per_chunk: int = 64,
    scores_format: Literal["parquet", "jsonl"] = "parquet",
    trainer: Devices = Devices(),
    seed: int = 0,
    progress: bool = True,
) -> dict[str, object]:
    """Score ``data`` with SEAM, write scores, kept/pruned subsets and a report; return the summary.

    Args:
        data: the RL prompts (any format ``RLHFDataModule`` reads; see the README's data section).
        policy: the policy whose likelihoods weight the candidates (π_SFT: the paper's choice).
        reward_model: the reward model under test.
        source: the candidate source, configured as in ``SeamCallback`` (e.g. ``ContrastSource``).
        output_dir: where every output goes.
        fraction: share of prompts pruned (paper: 0.2).
        selection: ``seam`` ranks by SEAM; ``perplexity`` by the golden response's perplexity
            under the policy (§7's baseline); ``random`` draws the fraction with ``seed``.
        order: ``largest`` prunes the largest values (the paper's), ``smallest`` the other end.
        num_candidates: candidates per prompt, N (paper: 30).
        dtype, quantization, attn_implementation: how both models are loaded.
        max_instruction_tokens, max_response_tokens, prompt_template, system_prompt: how prompts and
            responses are formatted, as the models were trained (``RLHFDataModule``'s arguments).
        token_budget: tokens per scoring forward pass (None: by device).
        prompts_per_chunk: prompts scored and saved to the progress store together.
        scores_format: ``parquet`` or ``jsonl``.
        trainer: accelerator, devices, num_nodes, strategy, precision (e.g. ``--trainer.devices 8
            --trainer.strategy ddp``).
        seed: seed of ``selection="random"``.
        progress: show a progress bar (with ETA) while scoring.
    """
    start = time.monotonic()
    out = Path(output_dir)
    seed_everything(seed, workers=True, verbose=False)
    callback = SeamCallback(
        source, mode="score", fraction=fraction, selection=selection, order=order, num_candidates=num_candidates,
        token_budget=token_budget, prompts_per_chunk=prompts_per_chunk, progress=progress,
        progress_dir=str(out / "progress"), seed=seed, name="score",
    )
    runner = Trainer(**asdict(trainer), callbacks=[callback], logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, limit_predict_batches=1,
                     default_root_dir=str(out))
    datamodule = RLHFDataModule(sft=None, sft_val=None, preference=None, preference_val=None, rl=data, rl_val=None,
                                max_instruction_tokens=max_instruction_tokens, max_response_tokens=max_response_tokens,
                                prompt_template=prompt_template, system_prompt=system_prompt, batch_size=1)
    module = ScoringModule(policy, reward_model, dtype=dtype, quantization=quantization,
                           attn_implementation=attn_implementation)
    runner.predict(module, datamodule=datamodule, return_predictions=False)
    if not runner.is_global_zero:
        return {}
    records = datamodule.rl_records()
    selected = set(callback.selected_ids)
    position = {r.id: i for i, r in enumerate(records)}
    suffix = subset_suffix(data)
    kept_path, pruned_path = out / f"kept{suffix}", out / f"pruned{suffix}"
    write_subsets(data, len(records), {
        kept_path: [position[r.id] for r in records if r.id not in selected],
        pruned_path: [position[i] for i in selected],
    })
    written = [kept_path, pruned_path]
    results = callback.last_results
    summary: dict[str, object] = {"prompts": len(records), "pruned": len(selected), "selection": selection,
                                  "reused": callback.last_scoring["reused"]}
    if results:
        scores_path = write_scores(out / f"scores.{scores_format}", results, records, selected)
        report = write_report(out, results, records, selected, settings={
            "data": data.path, "policy": policy, "reward_model": reward_model, "source": type(source).__name__,
            "num_candidates": num_candidates, "fraction": fraction, "order": order, "dtype": dtype,
            "devices": f"{runner.world_size} process(es) on {type(runner.accelerator).__name__}",
        })
        written += [scores_path, report]
        summary.update(summary_numbers(results, selected))
    elif callback.scores:  # perplexity: the values it ranked
        summary["perplexity_mean"] = sum(callback.scores.values()) / len(callback.scores)
    summary["seconds"] = round(time.monotonic() - start, 1)
    summary["files"] = [str(p) for p in written]
    write_json(out / "summary.json", summary, allow_nan=True)
    print(_summary_line(summary, out))
    return summary


def _summary_line(summary: dict[str, object], out: Path) -> str:
    line = (f"[seam-lightning score] {summary['prompts']} prompts in {summary['seconds']} s "
            f"({summary['reused']} from saved progress): pruned {summary['pruned']} by {summary['selection']}")
    if "seam_mean" in summary:
        line += (f"; SEAM mean {summary['seam_mean']:.4g}, max {summary['seam_max']:.4g}; RM misjudgement rate "
                 f"{summary['misjudgement_rate']:.3f}; {summary['without_candidates_share']:.1%} without candidates")
    return line + f"; wrote {out.resolve()}/"


def build_parser() -> ArgumentParser:
    """The command's parser: every argument of :func:`score`, from flags or ``--config`` files."""
    parser = ArgumentParser(prog="seam-lightning score", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file of these arguments")
    parser.add_function_arguments(score, as_group=False)
    return parser


def main(args: list[str] | None = None) -> dict[str, object]:
    """Run ``seam-lightning score`` (``args`` after the subcommand; None reads ``sys.argv``)."""
    parser = build_parser()
    config = parser.parse_args(args)
    config.pop("config", None)
    init = parser.instantiate_classes(config)
    return score(**init.as_dict())
