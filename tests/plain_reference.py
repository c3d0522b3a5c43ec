"""What plain `transformers` computes, as the architecture tests' reference.

Every function here runs the model's own ``forward`` on one unpadded sequence at a
time (no mask, no cache, no package code), so a padded, cached or batched path of
the package can be checked against it.
"""

from __future__ import annotations

import splitmix
import torch
from families import EOS_PROMPT

from seam_lightning.data.collate import pad
from seam_lightning.models.forward import response_logits
from seam_lightning.models.prefix import continuation_logprob_sums, encode_prompts

TOL = dict(atol=1e-4, rtol=1e-4)
INSTRUCTIONS = ["What does `json.dumps` do?", EOS_PROMPT, "Return the sum of the values; the quick brown fox"]
RESPONSES = ["Serialize obj to a JSON formatted str.", "Join two or more pathname components.", "Split"]
# (prompt index, response index): several continuations per prompt, of different lengths, out of order.
CONTINUATIONS = [(0, 0), (0, 2), (1, 1), (2, 2), (1, 0), (0, 1)]


def chat_ids(tokenizer) -> tuple[list[list[int]], list[list[int]]]:
    """Chat-template prompts (ending with the assistant header) and responses ending with EOS, all of
    different lengths."""
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                             tokenize=True) for q in INSTRUCTIONS]
    responses = [tokenizer(r, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for r in RESPONSES]
    assert len({len(p) for p in prompts}) == 3 and len({len(r) for r in responses}) == 3
    return prompts, responses


def rollout(prompts, responses, pad_id):
    """Left-padded prompts with right-padded responses after them, as sample_responses lays them out."""
    ids, mask = pad(prompts, pad_id, "left")
    resp, resp_mask = pad(responses, pad_id, "right")
    return torch.cat([ids, resp], 1), torch.cat([mask, resp_mask], 1), ids.shape[1]


def plain_logits(model, seq: list[int]) -> torch.Tensor:
    """Plain forward of one unpadded sequence: logits [T, V] in float32."""
    return model(input_ids=torch.tensor([seq])).logits[0].float()


def greedy_loop(model, prompt: list[int], max_new_tokens: int, eos: int) -> list[int]:
    """Greedy decoding as argmax over plain forwards of the growing sequence."""
    seq, out = list(prompt), []
    for _ in range(max_new_tokens):
        token = int(plain_logits(model, seq)[-1].argmax())
        seq.append(token)
        out.append(token)
        if token == eos:
            break
    return out


def seeded_loop(model, prompt: list[int], max_new_tokens: int, eos: int, seed: int, temperature: float) -> list[int]:
    """Inverse-CDF sampling over plain logits: the first token whose float64 CDF exceeds (seed, step)'s uniform."""
    seq, out = list(prompt), []
    for step in range(max_new_tokens):
        logits = plain_logits(model, seq)[-1]
        cdf = torch.softmax(logits.double() / temperature, -1).cumsum(0)
        token = int((cdf <= splitmix.uniform(seed, step)).sum())
        seq.append(token)
        out.append(token)
        if token == eos:
            break
    return out


def responses_of(out) -> list[list[int]]:
    """The generated tokens of sample_responses' output, each row cut at its length."""
    return [tokens[: int(n)].tolist() for tokens, n in zip(out.tokens, out.lengths)]


def check_response_logits(policy, tokenizer, chats, reference=None):
    """Left-padded prompts, right-padded responses: the logits predicting the response are the plain forward's
    (of ``reference``, default ``policy`` itself)."""
    prompts, responses = chats
    ids, mask, start = rollout(prompts, responses, tokenizer.pad_token_id)
    got = response_logits(policy, ids, mask, start)
    assert got.shape == (len(prompts), ids.shape[1] - start, policy.config.vocab_size)
    for row, (prompt, response) in enumerate(zip(prompts, responses)):
        # The unpadded sequence alone: its positions need no help from the mask.
        plain = plain_logits(reference or policy, prompt + response)
        n = len(response)
        torch.testing.assert_close(got[row, :n], plain[len(prompt) - 1 : len(prompt) - 1 + n], **TOL)


def check_continuation_logprob_sums(policy, tokenizer, chats):
    """Prompts run once (left-padded), continuations (right-padded) on their cache: sums as plain forwards."""
    prompts, responses = chats
    ids, mask = pad(prompts, tokenizer.pad_token_id, "left")
    states = encode_prompts(policy, ids, mask)
    rows = torch.tensor([p for p, _ in CONTINUATIONS])
    cont_ids, cont_mask = pad([responses[r] for _, r in CONTINUATIONS], tokenizer.pad_token_id, "right")
    got = continuation_logprob_sums(policy, states, rows, cont_ids, cont_mask)

    expected = []
    for p, r in CONTINUATIONS:
        prompt, cont = prompts[p], responses[r]
        logprobs = plain_logits(policy, prompt + cont).log_softmax(-1)
        predicting = logprobs[len(prompt) - 1 : len(prompt) - 1 + len(cont)]
        expected.append(predicting.gather(-1, torch.tensor(cont)[:, None]).sum())
    torch.testing.assert_close(got, torch.stack(expected), **TOL)
