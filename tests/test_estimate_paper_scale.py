"""The FLOP model (scripts/experiments/flops.py) and the paper-scale estimate against hand counts."""

import sys
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, LlamaConfig

from families import build_family_model_dir

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))

from estimate_paper_scale import GPUS, Costs, experiment_work, main, settings  # noqa: E402
from experiments.flops import Shape, forward_flops, shape_from_config, shared_prompt_flops  # noqa: E402


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen3"])
def test_shape_from_config_counts_the_weights_a_built_model_has(tmp_path, family):
    model = AutoModelForCausalLM.from_pretrained(build_family_model_dir(tmp_path / family, family))
    config = model.config
    model = get_peft_model(model, LoraConfig(r=4, layers_to_transform=[1], target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    frozen, lora = [0, 0], [0, 0]
    for name, module in model.named_modules():
        if ".layers." not in name:
            continue
        block = int(name.split(".layers.")[1].split(".")[0])
        if isinstance(module, torch.nn.Linear):
            (lora if "lora_" in name else frozen)[block] += module.weight.numel()
    shape = shape_from_config(config, lora_rank=4, lora_layers=1, weight_bytes=4)
    assert shape.frozen_per_block == frozen
    assert shape.lora_per_block == lora and lora[0] == 0 and lora[1] > 0
    assert shape.head == model.get_output_embeddings().weight.numel()
    assert shape.first_adapted == 1
    assert shape.weight_bytes == 4 * (sum(frozen) + sum(lora) + shape.head)


def test_forward_flops_by_hand():
    shape = Shape(frozen_per_block=[100, 100], lora_per_block=[0, 10], head=50, attention_width=4, kv_width=4,
                  weight_bytes=0)
    # two sequences of 3 and 2 tokens; head on 4 positions; attention 4·width·n(n+1)/2 per block
    expected = 2 * 210 * 5 + 2 * 50 * 4 + 2 * (4 * 4 * 6 + 4 * 4 * 3)
    assert forward_flops(shape, [3, 2], head_positions=4) == expected
    assert forward_flops(shape, [3, 2], head_positions=4, from_block=1) == 2 * 110 * 5 + 2 * 50 * 4 + 4 * 4 * 9


def test_shared_prompt_flops_by_hand():
    shape = Shape(frozen_per_block=[100, 100], lora_per_block=[0, 10], head=50, attention_width=4, kv_width=4,
                  weight_bytes=0)
    # a prompt of 3 tokens run once, continuations of 2 and 1 tokens after it: 6 tokens through the weights;
    # token i of the sequence attends to i tokens (4·width·i per block): prompt 1+2+3, then 4+5 and 4
    expected = 2 * 210 * 6 + 2 * 50 * 3 + 2 * 4 * 4 * (1 + 2 + 3 + 4 + 5 + 4)
    assert shared_prompt_flops(shape, 3, [2, 1], head_positions=3) == expected
    # no continuations: the prompt's forward alone
    assert shared_prompt_flops(shape, 3, [], head_positions=0) == forward_flops(shape, [3], head_positions=0)


def test_overlap_scoring_flops_match_a_hand_count_on_llama2_7b():
    """Three (PM, RM) pairs × 6,400 prompts × 30 candidates: each 256-token prompt once per model, then
    256-token responses (the PM without their last token; the RM also on the golden answer)."""
    s = settings("overlap")
    config = LlamaConfig()  # its defaults are LLaMa2-7B's
    _, rate, bandwidth = GPUS["h100"]
    costs = Costs(shape_from_config(config, lora_layers=32), shape_from_config(config, lora_layers=32, head="score"),
                  rate, bandwidth, prompt=256, response=256, eval_batch=32)
    work, _ = experiment_work("overlap", s, costs)
    h, inner, blocks = 4096, 11008, 32
    block = 4 * h * h + 3 * h * inner + 16 * (8 * h + 3 * (h + inner))  # q k v o, gate up down, LoRA r 16
    prompt = 2 * blocks * block * 256 + blocks * 4 * h * 256 * 257 / 2
    # a response token at sequence position i attends to i tokens: positions 257..511 (PM), 257..512 (RM)
    pm_response = 2 * blocks * block * 255 + blocks * 4 * h * (511 * 512 - 256 * 257) / 2
    rm_response = 2 * blocks * block * 256 + blocks * 4 * h * (512 * 513 - 256 * 257) / 2
    pm = prompt + 30 * pm_response + 2 * 32000 * h * 30 * 256  # head on every response token
    rm = prompt + 31 * rm_response + 31 * 2 * h  # score head once per response
    assert work.scoring_flops == pytest.approx(3 * 6400 * (pm + rm), rel=1e-9)
    assert work.train_flops == 0 and work.decode_s == 0


def test_the_estimate_runs_on_every_shipped_paper_config(tmp_path, capsys):
    out = tmp_path / "estimate.md"
    main(["--gpus", "h100", "--markdown", str(out)])
    table = out.read_text()
    for name in ("saturation", "sanity", "data_selection", "overlap", "scaling"):
        assert f"| {name} |" in table
    assert "Llama-2-70b-hf" in table and "total H100" in capsys.readouterr().out
