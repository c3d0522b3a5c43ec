import pytest

from seam_lightning.data.formatting import PLAIN_TEMPLATE, STACK_LLAMA_TEMPLATE, PromptFormatter
from seam_lightning.models import load_tokenizer


def test_chat_template_prompt_ends_with_generation_prompt(tiny_model_dir):
    tok = load_tokenizer(str(tiny_model_dir))
    prompt = PromptFormatter(tok, 64, 64).prompt_ids("What does x do?")
    assert not prompt.truncated
    assert tok.decode(prompt.ids) == "<|im_start|>user\nWhat does x do?<|im_end|>\n<|im_start|>assistant\n"


def test_plain_template_used_without_chat_template(tiny_plain_model_dir):
    tok = load_tokenizer(str(tiny_plain_model_dir))
    formatter = PromptFormatter(tok, 64, 64)
    assert not formatter.uses_chat_template
    assert tok.decode(formatter.prompt_ids("What does x do?").ids) == PLAIN_TEMPLATE.format(instruction="What does x do?")


def test_response_ends_with_eos_unless_truncated(tiny_model_dir):
    tok = load_tokenizer(str(tiny_model_dir))
    full = PromptFormatter(tok, 64, 64).response_ids("Join two paths.")
    assert full.ids[-1] == tok.eos_token_id and not full.truncated
    cut = PromptFormatter(tok, 64, 3).response_ids("Join two or more pathname components.")
    assert cut.truncated and len(cut.ids) == 3 and tok.eos_token_id not in cut.ids


def test_instruction_limit_applies_to_instruction_tokens_only(tiny_model_dir):
    tok = load_tokenizer(str(tiny_model_dir))
    long_instruction = "Explain what the quick brown fox does " * 10
    n_own = len(tok(long_instruction, add_special_tokens=False)["input_ids"])
    cut = PromptFormatter(tok, 5, 64).prompt_ids(long_instruction)
    template_only = PromptFormatter(tok, 64, 64).prompt_ids("")
    assert cut.truncated and n_own > 5
    assert len(cut.ids) <= len(template_only.ids) + 6  # 5 kept tokens (+1 for re-tokenising the cut text)


def test_plain_template_wins_over_the_chat_template(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    formatter = PromptFormatter(tokenizer, 64, 64, template=STACK_LLAMA_TEMPLATE)
    # StackLLaMA's prompt, tokenized as a whole (special tokens as the tokenizer adds them).
    assert formatter.prompt_ids("Why {x}?").ids == tokenizer("Question: Why {x}?\n\nAnswer: ")["input_ids"]


def test_system_prompt_goes_into_the_chat_template_and_before_a_plain_one(tiny_model_dir, tiny_plain_model_dir):
    chat = load_tokenizer(str(tiny_model_dir))
    expected = chat.apply_chat_template([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                                        tokenize=False, add_generation_prompt=True)
    ids = PromptFormatter(chat, 64, 64, system_prompt="Be brief.").prompt_ids("Hi").ids
    assert chat.decode(ids) == expected
    plain = load_tokenizer(str(tiny_plain_model_dir))
    ids = PromptFormatter(plain, 64, 64, template="Q: {instruction}\nA:", system_prompt="Be brief.").prompt_ids("Hi").ids
    assert ids == plain("Be brief.\n\nQ: Hi\nA:")["input_ids"]


def test_a_template_without_one_instruction_slot_is_refused(tiny_model_dir):
    with pytest.raises(ValueError, match="exactly once"):
        PromptFormatter(load_tokenizer(str(tiny_model_dir)), 64, 64, template="Question: {question}")
