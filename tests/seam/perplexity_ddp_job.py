"""SeamCallback(selection="perplexity") in one small job, run by test_perplexity_distributed.py as a real process.

    python tests/seam/perplexity_ddp_job.py --model DIR --data DIR[,DIR…] --devices 2 --out DIR

Lightning's DDP launcher starts the other ranks by running this same command again.
For each data folder (one after the other, in the same processes) every rank writes
``<out>/<index>/rank<r>.json``: the ids it selected, the perplexities it holds and how
many prompts it computed itself.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from doubles import ListSource, RLConsumer  # noqa: E402
from lightning.pytorch import Trainer, seed_everything  # noqa: E402

import seam_lightning.seam.callback as callback_module  # noqa: E402
from seam_lightning import DataSource, RLHFDataModule, SeamCallback  # noqa: E402


def count_own_share(computed: list[int]):
    """Wrap the callback's perplexity function so that each call's prompt count is recorded."""
    inner = callback_module.golden_perplexities

    def wrapper(model, formatter, examples, *args, **kwargs):
        computed.append(len(examples))
        return inner(model, formatter, examples, *args, **kwargs)

    callback_module.golden_perplexities = wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="data folder(s) with rl.jsonl, comma-separated")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--fraction", type=float, default=0.25)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    computed: list[int] = []
    count_own_share(computed)
    for index, data in enumerate(args.data.split(",")):
        seed_everything(0)
        callback = SeamCallback(ListSource({}), selection="perplexity", fraction=args.fraction, every_n_epochs=0,
                                reference_policy=args.model, progress=False)
        datamodule = RLHFDataModule(sft=None, sft_val=None, preference=None, preference_val=None,
                                    rl=DataSource(str(Path(data) / "rl.jsonl")), rl_val=None, batch_size=1)
        trainer = Trainer(accelerator="cpu", devices=args.devices, strategy="ddp" if args.devices > 1 else "auto",
                          max_steps=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                          enable_checkpointing=False, limit_val_batches=0, default_root_dir=args.out,
                          callbacks=[callback])
        trainer.fit(RLConsumer(args.model), datamodule=datamodule)
        out = Path(args.out) / str(index)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"rank{trainer.global_rank}.json").write_text(json.dumps({
            "world_size": trainer.world_size, "selected": callback.selected_ids, "pruned": callback.pruned_ids,
            "scores": {str(k): v for k, v in callback.scores.items()}, "computed": computed[-1],
        }))


if __name__ == "__main__":
    main()
