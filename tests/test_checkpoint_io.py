"""AtomicCheckpointIO: a save interrupted half-way leaves the previous checkpoint whole."""

import pytest
import torch

from seam_lightning.checkpoint_io import AtomicCheckpointIO


def test_save_and_load_round_trip(tmp_path):
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 3, "w": torch.arange(4)}, tmp_path / "sub" / "last.ckpt")
    loaded = io.load_checkpoint(tmp_path / "sub" / "last.ckpt")
    assert loaded["step"] == 3 and torch.equal(loaded["w"], torch.arange(4))
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["last.ckpt"]  # no temporary file left


def test_a_crash_while_writing_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)
    real_save = torch.save

    def dies_half_way(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:  # torch.save is given the temporary path
            handle.write(b"partial checkpoint bytes")
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert io.load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_the_cli_uses_it_by_default(tiny_model_dir):
    from pathlib import Path

    from seam_lightning.cli import build_cli

    config = Path(__file__).resolve().parents[1] / "seam_lightning" / "configs" / "sft.yaml"
    cli = build_cli(["--config", str(config), f"--model.init_args.model={tiny_model_dir}",
                     '--model.init_args.lora={"r": 4, "layers": null}'], run=False)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
