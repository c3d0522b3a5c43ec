"""load_records reads TRL standard/conversational, HH-RLHF and CSV data with no field mapping.

Each format is written to a small file (JSONL, Parquet, CSV/TSV or a `save_to_disk`
folder); the expected records are written out by hand from the rules in
seam_lightning/data/formats.py. Error cases check that the message names the file,
the record and the field.
"""
import json
import os
import re

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # never touch the network from tests

import pytest

from seam_lightning.data import DataError, DataSource, RLHFDataModule
from seam_lightning.data.records import Record, load_records

SFT = ["instruction", "response"]
PREF = ["instruction", "chosen", "rejected"]


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def system(text):
    return {"role": "system", "content": text}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


def save_dataset(path, rows):
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return str(path)


def texts(records):
    return [r.text for r in records]


# -- TRL standard -------------------------------------------------------------------------------

def test_standard_prompt_completion_jsonl(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "The sky is", "completion": " blue."},
                                          {"prompt": "Grass is", "completion": " green."}])
    assert load_records(DataSource(p), SFT) == [
        Record(0, {"instruction": "The sky is", "response": " blue."}, f"{p} line 1"),
        Record(1, {"instruction": "Grass is", "response": " green."}, f"{p} line 2"),
    ]


def test_standard_preference_parquet(tmp_path):
    p = write_parquet(tmp_path / "d.parquet", [{"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}])
    assert load_records(DataSource(p), PREF) == [
        Record(0, {"instruction": "The sky is", "chosen": " blue.", "rejected": " green."}, f"parquet {p} record 0")]


def test_standard_prompt_only_gives_instructions(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "Name a colour."}])
    assert texts(load_records(DataSource(p), ["instruction"])) == [{"instruction": "Name a colour."}]


def test_prompt_only_data_lacks_responses(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "Name a colour."}])
    message = f"{p} line 1: missing field 'response'; record has fields ['prompt']"
    with pytest.raises(DataError, match=re.escape(message)):
        load_records(DataSource(p), SFT)


def test_unpaired_preference_is_refused(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "The sky is", "completion": " green.", "label": False}])
    with pytest.raises(DataError, match=re.escape(f"{p} line 1: field 'label': unpaired preference records")):
        load_records(DataSource(p), SFT)


# -- TRL conversational -------------------------------------------------------------------------

def test_conversational_prompt_completion_with_system_jsonl(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [
        {"prompt": [system("Answer briefly. "), user("What color is the sky?")],
         "completion": [assistant("It is blue.")]},
        {"prompt": [system(""), user("And grass?")], "completion": [assistant("Green.")]},  # blank system: ignored
    ])
    assert texts(load_records(DataSource(p), SFT)) == [
        {"instruction": "Answer briefly.\n\nWhat color is the sky?", "response": "It is blue."},
        {"instruction": "And grass?", "response": "Green."},
    ]


def test_conversational_preference_saved_dataset(tmp_path):
    p = save_dataset(tmp_path / "saved", [
        {"prompt": [user("What color is the sky?")], "chosen": [assistant("It is blue.")],
         "rejected": [assistant("It is green.")]},
    ])
    assert load_records(DataSource(p), PREF) == [
        Record(0, {"instruction": "What color is the sky?", "chosen": "It is blue.", "rejected": "It is green."},
               f"dataset {p!r} split 'train' record 0")]


def test_conversational_implicit_prompt_parquet_multi_turn(tmp_path):
    prefix = [system("Be kind."), user("Hi."), assistant("Hello! How can I help?"), user("What color is the sky?")]
    p = write_parquet(tmp_path / "d.parquet", [
        {"chosen": [user("What color is the sky?"), assistant("It is blue.")],
         "rejected": [user("What color is the sky?"), assistant("It is green.")]},
        {"chosen": prefix + [assistant("Blue.")], "rejected": prefix + [assistant("Purple.")]},
    ])
    assert texts(load_records(DataSource(p), PREF)) == [
        {"instruction": "What color is the sky?", "chosen": "It is blue.", "rejected": "It is green."},
        {"instruction": "Be kind.\n\nHuman: Hi.\n\nAssistant: Hello! How can I help?\n\n"
                        "Human: What color is the sky?\n\nAssistant:",
         "chosen": "Blue.", "rejected": "Purple."},
    ]


def test_messages_saved_dataset_and_jsonl(tmp_path):
    rows = [
        {"messages": [user("What color is the sky?"), assistant("It is blue.")]},
        {"messages": [user("Hi."), assistant("Hello."), user("Bye?"), assistant("Bye.")]},
    ]
    expected = [
        {"instruction": "What color is the sky?", "response": "It is blue."},
        {"instruction": "Human: Hi.\n\nAssistant: Hello.\n\nHuman: Bye?\n\nAssistant:", "response": "Bye."},
    ]
    saved = save_dataset(tmp_path / "saved", rows)
    assert texts(load_records(DataSource(saved), SFT)) == expected
    assert texts(load_records(DataSource(write_jsonl(tmp_path / "d.jsonl", rows)), SFT)) == expected


# -- HH-RLHF text -------------------------------------------------------------------------------

HH_ROWS = [
    {"chosen": "\n\nHuman: What color is the sky?\n\nAssistant: It is blue.",
     "rejected": "\n\nHuman: What color is the sky?\n\nAssistant: It is green."},
    {"chosen": "\n\nHuman: Hi.\n\nAssistant: Hello.\n\nHuman: Bye?\n\nAssistant: Bye now.",
     "rejected": "\n\nHuman: Hi.\n\nAssistant: Hello.\n\nHuman: Bye?\n\nAssistant: No."},
]
HH_EXPECTED = [
    {"instruction": "What color is the sky?", "chosen": "It is blue.", "rejected": "It is green."},
    {"instruction": "Human: Hi.\n\nAssistant: Hello.\n\nHuman: Bye?\n\nAssistant:", "chosen": "Bye now.",
     "rejected": "No."},
]


def test_hh_rlhf_jsonl(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", HH_ROWS)
    assert texts(load_records(DataSource(p), PREF)) == HH_EXPECTED


def test_hh_rlhf_csv_with_multi_line_cells(tmp_path):
    import csv

    path = tmp_path / "hh.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["chosen", "rejected"])
        writer.writeheader()
        writer.writerows(HH_ROWS)
    records = load_records(DataSource(str(path)), PREF)
    assert texts(records) == HH_EXPECTED
    # A record is named by its first line: HH_ROWS[0] spans lines 2-10 (its cells hold 8 newlines).
    assert [r.origin for r in records] == [f"{path} line 2", f"{path} line 11"]


def test_hh_rlhf_and_the_same_conversation_as_messages_give_the_same_record(tmp_path):
    turns = [user("Hi."), assistant("Hello."), user("Bye?")]
    conv = write_jsonl(tmp_path / "c.jsonl", [{"chosen": turns + [assistant("Bye now.")],
                                               "rejected": turns + [assistant("No.")]}])
    hh = write_jsonl(tmp_path / "hh.jsonl", HH_ROWS[1:])
    assert texts(load_records(DataSource(conv), PREF)) == texts(load_records(DataSource(hh), PREF))


def test_plain_chosen_rejected_strings_are_not_split(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"chosen": "The sky is blue.", "rejected": "The sky is green."}])
    with pytest.raises(DataError, match=re.escape(f"{p} line 1: missing field 'instruction'")):
        load_records(DataSource(p), PREF)


# -- CSV ----------------------------------------------------------------------------------------

def test_csv_canonical_with_ids_blank_lines_and_numeric_text(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('id,instruction,response\n7,"Two\nlines",42\n\n-3,b,c\n', encoding="utf-8")
    assert load_records(DataSource(str(path), id_field="id"), SFT) == [
        Record(7, {"instruction": "Two\nlines", "response": "42"}, f"{path} line 2"),
        Record(-3, {"instruction": "b", "response": "c"}, f"{path} line 5"),
    ]


def test_tsv_with_bom_and_trl_columns(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_bytes(b"\xef\xbb\xbfprompt\tcompletion\r\nThe sky is\t blue.\r\n")
    assert texts(load_records(DataSource(str(path)), SFT)) == [{"instruction": "The sky is", "response": " blue."}]


def test_csv_with_field_mapping(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("question,answer\nq,a\n", encoding="utf-8")
    recs = load_records(DataSource(str(path), fields={"instruction": "question", "response": "answer"}), SFT)
    assert texts(recs) == [{"instruction": "q", "response": "a"}]


@pytest.mark.parametrize("content, message", [
    (b"instruction,response\na,b\nc\n", "line 3: 1 cells, but the header has 2 columns"),
    (b"instruction,response\na,\n", "line 2: field 'response' is empty"),
    (b"instruction,instruction\na,b\n", "line 1: header repeats column(s) ['instruction']"),
    (b"instruction,response\na,b\nc,\xff\n", "line 3: not valid UTF-8 (byte 0xff at position 2)"),
    (b"id,instruction,response\nx1,a,b\n", "line 2: id field 'id' must be an integer, got str"),
    (b"id,instruction,response\n" + b"9" * 5000 + b",a,b\n", "line 2: id field 'id' must be an integer, got str"),
    (b"instruction,response\n", ": no records"),
], ids=["short-row", "empty-cell", "repeated-header", "bad-utf8", "non-integer-id", "5000-digit-id", "header-only"])
def test_csv_errors_name_file_line_and_field(tmp_path, content, message):
    path = tmp_path / "d.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(f"{path}{'' if message.startswith(':') else ' '}{message}")):
        load_records(DataSource(str(path), id_field="id" if content.startswith(b"id") else None), SFT)


def test_missing_csv_file(tmp_path):
    path = tmp_path / "nope.csv"
    with pytest.raises(DataError, match=re.escape(f"{path}: no such file")):
        load_records(DataSource(str(path)), SFT)


# -- precedence ---------------------------------------------------------------------------------

def test_explicit_mapping_wins_over_the_detected_format(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"messages": [user("ignored"), assistant("ignored")],
                                           "q": "Q", "a": "A"}])
    recs = load_records(DataSource(p, fields={"instruction": "q", "response": "a"}), SFT)
    assert texts(recs) == [{"instruction": "Q", "response": "A"}]


def test_partial_mapping_takes_the_rest_from_the_format(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"prompt": [user("What color is the sky?")], "title": "Sky",
                                           "chosen": [assistant("Blue.")], "rejected": [assistant("Green.")]}])
    recs = load_records(DataSource(p, fields={"instruction": "title"}), PREF)
    assert texts(recs) == [{"instruction": "Sky", "chosen": "Blue.", "rejected": "Green."}]


def test_canonical_columns_win_over_other_format_fields(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [
        {"instruction": "I", "response": "R", "messages": [user("x"), assistant("y")], "prompt": "p"},
        {"prompt": "P", "response": "R2"},  # no completion: the response column is used
    ])
    assert texts(load_records(DataSource(p), SFT)) == [{"instruction": "I", "response": "R"},
                                                       {"instruction": "P", "response": "R2"}]


# -- errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("row, fields, message", [
    ({"messages": [user("Q")]}, SFT, "field 'messages' has no assistant message (the response)"),
    ({"messages": [user("Q"), assistant("A"), user("Q2")]}, SFT,
     "field 'messages' message 2: the last message must be the assistant's response, got role 'user'"),
    ({"messages": [user("Q"), {"role": "tool", "content": "42"}, assistant("A")]}, SFT,
     "field 'messages' message 1: role 'tool' is not one of 'system', 'user', 'assistant'"),
    ({"messages": [user("Q"), system("S"), assistant("A")]}, SFT,
     "field 'messages' message 1: a system message may only come first"),
    ({"messages": [system("S"), assistant("A")]}, SFT,
     "field 'messages': the prompt must end with a user message, got no message"),
    ({"messages": [user(" "), assistant("A")]}, SFT, "field 'messages' message 0: content is empty"),
    ({"messages": [user("Q"), {"role": "assistant", "text": "A"}]}, SFT,
     "field 'messages' message 1 has no 'content'; it has ['role', 'text']"),
    ({"messages": []}, SFT, "field 'messages' must be a non-empty list of messages, got an empty list"),
    ({"prompt": [user("Q")], "completion": [assistant("A"), assistant("B")]}, SFT,
     "field 'completion' must be one assistant message (the response), got roles ['assistant', 'assistant']"),
    ({"prompt": [user("Q")], "completion": "A"}, SFT,
     "field 'completion' is a str but field 'prompt' is a list of messages"),
    ({"chosen": [user("Q"), assistant("A")], "rejected": [user("Other"), assistant("B")]}, PREF,
     "fields 'chosen' and 'rejected' share no prefix"),
    ({"chosen": [user("Q"), assistant("A"), user("Q2"), assistant("B")],
      "rejected": [user("Q"), assistant("C"), user("Q2"), assistant("D")]}, PREF,
     "fields 'chosen' and 'rejected' differ at message 1, before their last message"),
    ({"chosen": [user("Q"), assistant("A")], "rejected": "\n\nHuman: Q\n\nAssistant: B"}, PREF,
     "field 'chosen' is a list of messages but field 'rejected' is a str"),
    ({"chosen": "\n\nHuman: Q\n\nAssistant: A", "rejected": "\n\nHuman: Q\n\nAssistant:"}, PREF,
     "field 'rejected' turn 1 (Assistant): content is empty"),
    ({"chosen": "\n\nHuman: Q\n\nAssistant: A", "rejected": "\n\nHuman: R\n\nAssistant: B"}, PREF,
     "fields 'chosen' and 'rejected' share no prefix"),
    ({"prompt": "Q", "completion": 5}, SFT, "field 'completion' must be a string, got int"),
], ids=["no-assistant", "ends-with-user", "tool-role", "late-system", "no-user", "blank-user", "no-content",
        "no-messages", "two-message-completion", "mixed-forms", "no-shared-prefix", "differ-mid-prompt",
        "mixed-implicit", "hh-empty-answer", "hh-no-shared-prefix", "non-text-completion"])
def test_format_errors_name_file_record_and_field(tmp_path, row, fields, message):
    p = write_jsonl(tmp_path / "d.jsonl", [{"messages": [user("fine"), assistant("fine")]}
                                          if "messages" in row else {"prompt": "fine", "completion": "fine",
                                                                     "chosen": "fine", "rejected": "fine"}, row])
    with pytest.raises(DataError, match=re.escape(f"{p} line 2: {message}")):
        load_records(DataSource(p), fields)


def test_parquet_error_names_the_record_index(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Arrow fills a missing struct field with None: a message without content.
    table = pa.Table.from_pylist([{"messages": [user("Q"), assistant("A")]},
                                  {"messages": [user("Q"), {"role": "assistant", "content": None}]}])
    p = tmp_path / "d.parquet"
    pq.write_table(table, p)
    with pytest.raises(DataError, match=re.escape(
            f"parquet {p} record 1: field 'messages' message 1: content must be a string, got NoneType")):
        load_records(DataSource(str(p)), SFT)


def test_saved_dataset_error_names_the_record_index(tmp_path):
    p = save_dataset(tmp_path / "saved", [{"messages": [user("Q"), assistant("A")]},
                                          {"messages": [user("Q"), user("Q again")]}])
    with pytest.raises(DataError, match=re.escape(
            f"dataset {p!r} split 'train' record 1: field 'messages' has no assistant message")):
        load_records(DataSource(p), SFT)


# -- end to end ---------------------------------------------------------------------------------

def test_datamodule_reward_stage_reads_trl_conversational_preferences(tmp_path, tiny_model_dir):
    from seam_lightning.models import load_tokenizer

    rows = [{"prompt": [user(f"What is {i} + {i}?")], "chosen": [assistant(f"{2 * i}.")],
             "rejected": [assistant("Seven.")]} for i in range(4)]
    source = DataSource(write_jsonl(tmp_path / "prefs.jsonl", rows))
    dm = RLHFDataModule(sft=None, sft_val=None, preference=source, preference_val=None, rl=None, rl_val=None,
                        batch_size=2)
    tokenizer = load_tokenizer(str(tiny_model_dir))
    dm.connect(tokenizer, "preference")
    dm.setup("fit")
    examples = dm.examples("preference")
    assert [(e["instruction"], e["chosen"], e["rejected"]) for e in examples] == [
        (f"What is {i} + {i}?", f"{2 * i}.", "Seven.") for i in range(4)]
    assert examples[1]["prompt_ids"] == dm.formatter.prompt_ids("What is 1 + 1?").ids
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == 4  # chosen and rejected of 2 pairs
