import math

import pytest
from perplexity_reference import plain_perplexity
from transformers import AutoModelForCausalLM

from seam_lightning.data.formatting import PromptFormatter
from seam_lightning.models.loading import load_tokenizer
from seam_lightning.seam.perplexity import golden_perplexities, perplexity


def test_perplexity_is_exp_of_the_mean_token_nll():
    assert perplexity(-6.0, 3) == pytest.approx(math.exp(2.0))
    assert perplexity(0.0, 5) == 1.0
    assert perplexity(-1e6, 1) == math.inf  # no OverflowError
    with pytest.raises(ValueError, match="at least one token"):
        perplexity(0.0, 0)


EXAMPLES = [
    (4, "Explain `os.path.join`.", "Join two or more pathname components."),
    (7, "What does `json.dumps` do?", "zq xv kk jj"),
    (9, "Return the sum.", ""),  # an empty response is scored on its EOS alone
]


@pytest.mark.parametrize("token_budget", [1, 64, 4096])  # one row per batch .. everything in one padded batch
def test_golden_perplexities_equal_a_plain_forward_whatever_the_batching(tiny_model_dir, token_budget):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = load_tokenizer(str(tiny_model_dir))
    formatter = PromptFormatter(tokenizer, max_instruction_tokens=128, max_response_tokens=64)
    got = golden_perplexities(model, formatter, EXAMPLES, token_budget, prompts_per_chunk=2)
    assert list(got) == [4, 7, 9]
    for i, instruction, response in EXAMPLES:
        assert got[i] == pytest.approx(plain_perplexity(model, tokenizer, instruction, response), rel=1e-4)
