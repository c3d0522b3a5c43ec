"""The memory accounting of one training step (scripts/bench_memory.py's part 2): a pure model of the bytes
a step's peak holds, the constants it rests on, and the architectures it is extrapolated to."""

from __future__ import annotations

from dataclasses import dataclass

GIB = 2**30

KORTHIKANTI_VALUES = 17.0
"""Activations saved per token, layer and hidden unit, in activation-sized values, without recomputation.

Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models" (arXiv:2205.05198),
Sec. 4.1, Eq. 1: a transformer layer keeps s·b·h·(34 + 5·a·s/h) bytes with 2-byte activations (1-byte
dropout masks counted in). With fused attention (sdpa's flash / memory-efficient kernels) the
5·a·s/h term (the s x s scores, softmax and its dropout) is not kept, leaving 34·h bytes per token,
i.e. 17 values of h; at float32 that is 68·h bytes.
"""
CHECKPOINT_VALUES = 1.0
"""With checkpointing at block boundaries only each block's input is kept: 2·s·b·h·L bytes at 2 bytes
(ibid., full activation recomputation), plus one block's activations while it is recomputed in the backward."""
TRAINABLE_BYTES = 16
"""Per trainable parameter: fp32 weight, fp32 gradient, AdamW exp_avg and exp_avg_sq (same dtype as the
weight). peft keeps LoRA adapters (and the score head of a reward/value model) in float32 even on a
bf16 base (``autocast_adapter_dtype``), so this does not shrink with the base dtype."""
LOGIT_COPIES = {"sft": 3, "rm": 0, "ppo": 4}
"""float32 [response tokens x vocab] tensors alive at once. SFT (``response_token_logprobs``): the saved
log-softmax output, its gradient and the gradient of its input at the head's backward. PPO update
(``response_logits`` / temperature, ``logprobs_of``): the scaled logits kept for the entropy, the saved
log-softmax output and the two gradients. The reward and value heads read one unit per position."""
ADAPTER_BYTES = 4
"""peft's LoRA Linear casts its input to the adapter's dtype (fp32) before ``lora_A``, which keeps that
copy for its weight gradient: on a bf16 base every adapted linear keeps an fp32 copy of its input
(6·h + intermediate values per token per layer with q, k, v, o, gate, up, down adapted). With LoRA
dropout the dropped copy is kept instead, plus its mask: 1 byte (bool) on CUDA, an fp32 noise tensor on
CPU. On an fp32 base without dropout ``lora_A`` keeps the very tensor the block keeps anyway."""


@dataclass(frozen=True)
class Arch:
    """What the accounting needs to know about a decoder (Llama-style: SwiGLU MLP, grouped KV heads)."""

    name: str
    n_params: float
    hidden: int
    layers: int
    vocab: int
    intermediate: int
    kv_dim: int  # key (= value) width: num_key_value_heads x head_dim
    tied_embeddings: bool


ARCHS = {
    "SmolLM2-135M": Arch("SmolLM2-135M", 134.5e6, 576, 30, 49152, 1536, 192, True),
    "Llama-3.2-1B": Arch("Llama-3.2-1B", 1.24e9, 2048, 16, 128256, 8192, 512, True),
    "Llama-2-7B": Arch("Llama-2-7B", 6.74e9, 4096, 32, 32000, 11008, 4096, False),
    "Mistral-7B": Arch("Mistral-7B", 7.24e9, 4096, 32, 32000, 14336, 1024, False),
    "Llama-2-13B": Arch("Llama-2-13B", 13.0e9, 5120, 40, 32000, 13824, 5120, False),
}


def lora_param_count(hidden: int, intermediate: int, kv_dim: int, layers: int, r: int) -> int:
    """LoRA parameters for r on every block linear (q, k, v, o, gate, up, down): r·(in + out) each."""
    per_layer = (hidden + hidden) + 2 * (hidden + kv_dim) + (hidden + hidden) + 2 * (hidden + intermediate) \
        + (intermediate + hidden)
    return r * per_layer * layers


def lora_activation_bytes(hidden: int, intermediate: int, dtype_bytes: int, lora_dropout: bool,
                          mask_bytes: int = 1, adapter_bytes: int = ADAPTER_BYTES) -> float:
    """Bytes per token per layer that LoRA on every block linear adds to the kept activations (see ADAPTER_BYTES)."""
    inputs = 6 * hidden + intermediate  # q, k, v, o, gate, up read h values; down reads intermediate
    if lora_dropout:
        return inputs * (adapter_bytes + mask_bytes)
    return inputs * adapter_bytes if dtype_bytes != adapter_bytes else 0.0


def estimate(n_params: float, hidden: int, layers: int, vocab: int, dtype_bytes: int, lora_params: float,
             batch: int, seq_len: int, checkpointing: bool, *, stage: str = "sft", response_len: float | None = None,
             intermediate: int | None = None, kv_dim: int | None = None, tied_embeddings: bool = True,
             lora_dropout: bool = False, mask_bytes: int = 1, act_values: float = KORTHIKANTI_VALUES,
             mini_batch: int | None = None, shared_reward_backbone: bool = True) -> dict[str, float]:
    """GiB per part of the peak of one LoRA training step of ``stage`` ("sft", "rm" or "ppo").

    Weights (``dtype_bytes`` each): SFT holds the policy; RM one backbone with a 1-unit head (no LM head
    when the embeddings are untied). PPO holds the policy, whose adapters switched off are the reference
    (no copy), and the value model; with ``shared_reward_backbone`` (PPOModule's default: value LoRA on
    the RM, no separate ``value_model``) the frozen RM is the value model with its adapters off, else it
    is one more backbone. Trainable: ``TRAINABLE_BYTES`` per LoRA parameter (PPO: the policy's and the
    value model's adapters) and per unit of a scalar head (``hidden``). Activations per token per layer:
    ``act_values`` x hidden x dtype_bytes (Korthikanti et al.) plus :func:`lora_activation_bytes`; with
    ``checkpointing`` one hidden state per token per layer plus one layer's activations. Tokens: SFT
    batch x seq_len; RM 2 x batch x seq_len (chosen and rejected); PPO the mini-batch through the policy
    and the value model, which back-propagate together. Logits: ``LOGIT_COPIES`` float32 [response tokens
    x vocab] tensors, ``response_len`` (default seq_len // 2) per sequence. PPO's generation (KV cache of
    batch x seq_len tokens and 3 float32 [batch x vocab]) comes before the update, so ``total`` counts the
    larger of the two; otherwise it is the sum. Nothing for the framework, the CUDA context or
    fragmentation: leave headroom for those.
    """
    intermediate = intermediate if intermediate is not None else 8 * hidden // 3
    kv_dim = kv_dim if kv_dim is not None else hidden
    response_len = response_len if response_len is not None else seq_len // 2
    mini_batch = mini_batch if mini_batch is not None else batch
    backbone = n_params * dtype_bytes
    headless = (n_params - (0 if tied_embeddings else vocab * hidden)) * dtype_bytes
    per_token_layer = act_values * hidden * dtype_bytes \
        + lora_activation_bytes(hidden, intermediate, dtype_bytes, lora_dropout, mask_bytes)

    def activations(tokens: int) -> float:
        if checkpointing:
            return tokens * layers * hidden * dtype_bytes * CHECKPOINT_VALUES + tokens * per_token_layer
        return tokens * layers * per_token_layer

    parts = dict.fromkeys(("policy", "reference", "reward_model", "value_model", "trainable", "activations",
                           "logits", "generation"), 0.0)
    if stage == "sft":
        parts.update(policy=backbone, trainable=lora_params * TRAINABLE_BYTES,
                     activations=activations(batch * seq_len))
        parts["logits"] = batch * response_len * vocab * 4 * LOGIT_COPIES["sft"]
    elif stage == "rm":
        parts.update(reward_model=headless, trainable=(lora_params + hidden) * TRAINABLE_BYTES,
                     activations=activations(2 * batch * seq_len))
    elif stage == "ppo":
        parts.update(policy=backbone, value_model=headless, reward_model=0.0 if shared_reward_backbone else headless,
                     trainable=(2 * lora_params + hidden) * TRAINABLE_BYTES,
                     activations=2 * activations(mini_batch * seq_len))
        parts["logits"] = mini_batch * response_len * vocab * 4 * LOGIT_COPIES["ppo"]
        parts["generation"] = 2 * layers * kv_dim * dtype_bytes * batch * seq_len + 3 * batch * vocab * 4
    else:
        raise ValueError(f"stage must be 'sft', 'rm' or 'ppo', got {stage!r}")
    fixed = sum(parts[k] for k in ("policy", "reference", "reward_model", "value_model", "trainable"))
    parts["total"] = fixed + max(parts["activations"] + parts["logits"], parts["generation"])
    return {k: v / GIB for k, v in parts.items()}


def estimate_arch(arch: Arch, stage: str, dtype_bytes: int, batch: int, seq_len: int, checkpointing: bool, *,
                  r: int = 16, **kwargs) -> dict[str, float]:
    """:func:`estimate` for a named architecture with LoRA r on every block linear."""
    lora = lora_param_count(arch.hidden, arch.intermediate, arch.kv_dim, arch.layers, r)
    return estimate(arch.n_params, arch.hidden, arch.layers, arch.vocab, dtype_bytes, lora, batch, seq_len,
                    checkpointing, stage=stage, intermediate=arch.intermediate, kv_dim=arch.kv_dim,
                    tied_embeddings=arch.tied_embeddings, **kwargs)


def fits(total_gib: float, gpu_gib: float, headroom: float = 0.1) -> bool:
    """Whether a step of ``total_gib`` fits on a GPU of ``gpu_gib`` with ``headroom`` of it kept free."""
    return total_gib <= (1 - headroom) * gpu_gib


# -- the extrapolation tables -----------------------------------------------------------------------

def extrapolation_rows(act_values: float, batch: int, seq_len: int, r: int) -> list[tuple[str, str, bool, float, dict]]:
    rows = []
    for name, arch in ARCHS.items():
        for stage in ("sft", "rm", "ppo"):
            for checkpointing in (False, True):
                est = estimate_arch(arch, stage, 2, batch, seq_len, checkpointing, r=r, act_values=act_values,
                                    lora_dropout=stage != "ppo")
                rows.append((name, stage, checkpointing, est["total"], est))
    return rows


def print_extrapolation(act_values: float, batch: int, seq_len: int, r: int, gpus=(24, 48, 80),
                        headroom: float = 0.1) -> None:
    print(f"\n== Estimated peak, bf16 weights, LoRA r={r} all-linear, {batch} x {seq_len} tokens "
          f"(activations at {act_values:.1f} values/token/layer/h; GiB) ==")
    head = " ".join(f"{g:>4}G" for g in gpus)
    print(f"{'model':<13} {'stage':<5} {'ckpt':<4} {'weights':>8} {'train.':>7} {'acts':>7} {'logits':>7} "
          f"{'gen.':>6} {'total':>7}  {head}")
    for name, stage, checkpointing, total, est in extrapolation_rows(act_values, batch, seq_len, r):
        weights = est["policy"] + est["reference"] + est["reward_model"] + est["value_model"]
        marks = " ".join(f"{'yes' if fits(total, g, headroom) else 'no':>5}" for g in gpus)
        print(f"{name:<13} {stage:<5} {'on' if checkpointing else 'off':<4} {weights:>8.1f} {est['trainable']:>7.2f} "
              f"{est['activations']:>7.1f} {est['logits']:>7.2f} {est['generation']:>6.2f} {total:>7.1f}  {marks}")
    print(f"'yes': total <= {1 - headroom:.0%} of the GPU's memory ({headroom:.0%} kept for the CUDA context, "
          "allocator fragmentation and framework buffers).")


def print_markdown(act_values: float, batch: int, seq_len: int, r: int, gpus=(24, 48, 80), headroom: float = 0.1):
    print(f"\n== README table (markdown): bf16, LoRA r={r} all-linear, {batch} x {seq_len} tokens ==\n")
    totals = {(n, s, c): t for n, s, c, t, _ in extrapolation_rows(act_values, batch, seq_len, r)}
    names = list(ARCHS)
    print("| model | stage | peak GiB (no ckpt / ckpt) | " + " | ".join(f"{g} GB" for g in gpus) + " |")
    print("|---|---|---|" + "---|" * len(gpus))
    for name in names:
        for stage, label in (("sft", "SFT"), ("rm", "RM"), ("ppo", "PPO")):
            off, on = totals[(name, stage, False)], totals[(name, stage, True)]
            cells = []
            for g in gpus:
                cells.append("yes" if fits(off, g, headroom) else "with ckpt" if fits(on, g, headroom) else "no")
            print(f"| {name} | {label} | {off:.1f} / {on:.1f} | " + " | ".join(cells) + " |")


def print_assumptions(r: int, batch: int, seq_len: int) -> None:
    print("\n== Accounting assumptions ==")
    print(f"- weights in bf16; LoRA r={r} on q,k,v,o,gate,up,down (adapters, heads and their AdamW state in fp32:\n"
          f"  {TRAINABLE_BYTES} bytes per trainable parameter); no quantization, one GPU, no DDP/FSDP/offload.\n"
          "- SFT: policy only. RM: one backbone + scalar head; batch = pairs, so 2 x batch sequences.\n"
          "  PPO (the module's defaults): policy + value model = 2 backbones; the reference is the policy with its\n"
          "  adapters off and the frozen RM the value model with its adapters off (a separate value_model adds a\n"
          "  third); policy and value model back-propagate one mini-batch (= the batch) together; generation's\n"
          "  KV cache comes before the update and is counted only if larger.\n"
          f"- {seq_len // 2} of the {seq_len} tokens of a sequence are response tokens (SFT loss, PPO response);\n"
          "  LoRA dropout 0.05 in SFT/RM, 0 in PPO (the modules' defaults).\n"
          f"- activations per token per layer: {KORTHIKANTI_VALUES:.0f} x h x 2 bytes (Korthikanti et al. 2022: 34sbh "
          "bytes with fused\n  attention) + LoRA: an fp32 copy of each adapted linear's input, (6h + intermediate) x 4 "
          "bytes (with\n  dropout: the dropped copy + a 1-byte CUDA mask); with checkpointing 1 x h x 2 bytes + one "
          "recomputed layer.\n"
          f"- logits in float32: {LOGIT_COPIES['sft']} (SFT) / {LOGIT_COPIES['ppo']} (PPO) [response tokens x vocab] "
          "tensors at once;\n  only positions that predict response tokens go through the output head.\n"
          "- not counted: CUDA context (~0.5 GiB), cuBLAS workspaces, fragmentation: the 10% headroom covers them.")
