"""Fuzz tests for load_records: whatever the file holds, the result is valid records or a DataError.

A DataError names the file, the line (JSONL) or record (Parquet), and for a field
problem the field; no other exception may escape. Where the input is built from
known rows, the expected outcome is computed independently (`_first_bad_line`)
and the records must match it exactly.
"""
import codecs
import json
import re

import pytest

from hypothesis import event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from seam_lightning.data.records import DataError, DataSource, Record, load_records  # noqa: E402

FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=150)
REQUIRED = ["instruction", "response"]
INT64 = (-(2**63), 2**63 - 1)

# A few huge values, built once: generating a 1 MB string character by character is slow.
HUGE = ["a" * 1_000_000, "é" * 300_000, " x\r\n" * 100_000]
HUGE_BAD = [" \t\n" * 100_000, "x" * 100_000 + "\ud800"]

good_texts = st.one_of(st.text(st.characters(codec="utf-8"), min_size=1, max_size=30).filter(str.strip),
                       st.sampled_from(HUGE))
texts = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=" \t\r\n\x0b\x0c\u00a0\u2028\u3000", max_size=5),  # whitespace only
    st.text(st.characters(codec=None, categories=["Cs", "Cc", "Zs", "Lo"]), max_size=5),  # lone surrogates too
    st.sampled_from(HUGE_BAD),
)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10))
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
ids = st.one_of(st.integers(*INT64), st.integers(), st.sampled_from([2**63, -(2**63) - 1, 10**40, True, 1.0, "3"]),
                json_values)
extra = st.dictionaries(st.text(max_size=8), json_values, max_size=2)
# Mostly valid rows (so that whole files load), then rows with fields missing, of a wrong type or
# blank, plus extra keys; and lines that are not objects at all.
valid_rows = st.fixed_dictionaries({"instruction": good_texts, "response": good_texts, "q": good_texts,
                                    "id": st.integers(-3, 30) | st.sampled_from(INT64)})
odd_rows = st.fixed_dictionaries(
    {}, optional={"instruction": texts | json_values, "response": texts | json_values, "q": texts, "id": ids},
)
rows = st.one_of(valid_rows, valid_rows, valid_rows, valid_rows, odd_rows, json_values).flatmap(
    lambda row: extra.map(lambda x: {**x, **row}) if isinstance(row, dict) else st.just(row))


@st.composite
def jsonl_files(draw):
    """(lines as bytes without terminators, the file's bytes): BOM, CRLF, blank lines, \\u escapes or raw UTF-8."""
    lines = []
    for row in draw(st.lists(rows, max_size=6)):
        for _ in range(draw(st.integers(0, 1))):
            lines.append(draw(st.sampled_from([b"", b"   ", b"\t", b"\r", b"\x0c"])))
        text = json.dumps(row, ensure_ascii=draw(st.booleans()))
        lines.append(text.encode("utf-8", errors="surrogatepass"))  # raw surrogates: invalid UTF-8
    if lines and draw(st.booleans()):
        lines[0] = codecs.BOM_UTF8 + lines[0]
    end = draw(st.sampled_from([b"\n", b"\r\n"]))
    data = b"".join(line + end for line in lines)
    if data and draw(st.booleans()):
        data = data[: -len(end)]  # no newline at the end of the file
    return lines, data


def _first_bad_line(lines, columns, id_field, limit):
    """(line number, bad fields) of the first line the loader must reject; (None, ()) if none.

    Stated from the documented rules, not from the loader's code: a line must be UTF-8
    JSON holding an object whose text fields are non-blank strings of valid Unicode, and
    whose id (if any) is a 64-bit int (bool excluded) not seen before.
    """
    seen, read = set(), 0
    for n, raw in enumerate(lines, start=1):
        if n == 1:
            raw = raw.removeprefix(codecs.BOM_UTF8)
        if not raw.strip():
            continue
        if limit is not None and read == limit:
            break
        read += 1
        try:
            row = json.loads(raw.decode("utf-8"))
        except ValueError:
            return n, ()
        if not isinstance(row, dict):
            return n, ()
        bad = tuple(c for c in columns if not _good_text(row.get(c)))
        rid = row.get(id_field) if id_field else None
        if id_field and (type(rid) is not int or not INT64[0] <= rid <= INT64[1]):
            bad += (id_field,)
        if bad:
            return n, bad
        if id_field and rid in seen:
            return n, ("duplicate",)
        seen.add(rid)
    return None, ()


def _good_text(value):
    if not isinstance(value, str) or not value.strip():
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_records(records, required):
    """Every record has non-blank str texts for exactly `required`; ids are unique ints."""
    assert records
    for r in records:
        assert isinstance(r, Record) and type(r.id) is int
        assert set(r.text) == set(required)
        assert all(isinstance(v, str) and v.strip() for v in r.text.values())
    assert len({r.id for r in records}) == len(records)
    assert all(INT64[0] <= r.id <= INT64[1] for r in records)  # ids become int64 tensors


def _check_message(message, path, columns, where="line"):
    """The message starts with the file; names a line/record unless it is about the whole file; is short."""
    assert len(message) < 2000, message[:300]
    assert message.startswith((path, f"parquet {path}")), message
    if not message.startswith(f"{path}: "):  # whole-file problems: no records, unreadable file, bad limit
        match = re.match(rf"(?:parquet )?{re.escape(path)} {where} (\d+): ", message)
        assert match, message
        if re.search(r"\bfield\b", message):
            assert any(repr(c) in message for c in columns), message
        return int(match.group(1))
    return None


sources = st.fixed_dictionaries({
    "fields": st.sampled_from([{}, {"instruction": "q"}, {"response": "instruction"}]),
    "id_field": st.sampled_from([None, None, "id", "q"]),
    "limit": st.one_of(st.none(), st.integers(-1, 4)),
})


@FUZZ
@given(jsonl_files(), sources)
def test_jsonl_rows_give_the_expected_records_or_error(tmp_path_factory, file, options):
    lines, data = file
    path = tmp_path_factory.mktemp("fuzz") / "d.jsonl"
    path.write_bytes(data)
    source = DataSource(str(path), **options)
    columns = [source.fields.get(name, name) for name in REQUIRED]
    if options["limit"] is not None and options["limit"] < 1:
        with pytest.raises(DataError, match=re.escape(f"{path}: limit must be a positive integer")):
            load_records(source, REQUIRED)
        return
    bad_line, bad_fields = _first_bad_line(lines, columns, options["id_field"], options["limit"])
    try:
        records = load_records(source, REQUIRED)
    except DataError as e:
        line = _check_message(str(e), str(path), [*columns, options["id_field"]])
        event(f"DataError: {re.sub(r'.*?: ', '', str(e), count=1)[:20]}")
        if bad_line is None:
            assert str(e) == f"{path}: no records"
            assert not any(raw.removeprefix(codecs.BOM_UTF8).strip() for raw in lines)
        else:
            assert line == bad_line, str(e)
            if bad_fields == ("duplicate",):
                assert "duplicate id" in str(e)
            elif bad_fields:
                assert any(f"field {c!r}" in str(e) for c in bad_fields), str(e)
        return
    assert bad_line is None
    event("records")
    _check_records(records, REQUIRED)
    # Round trip: the records are the non-blank lines, in order, with their texts unchanged.
    kept = [(n, raw) for n, raw in enumerate(lines, start=1) if raw.removeprefix(codecs.BOM_UTF8).strip()]
    kept = kept[: options["limit"]]
    assert [r.origin for r in records] == [f"{path} line {n}" for n, _ in kept]
    parsed = [json.loads(raw.removeprefix(codecs.BOM_UTF8)) for _, raw in kept]
    assert [r.text for r in records] == [{name: row[col] for name, col in zip(REQUIRED, columns)} for row in parsed]
    expected_ids = [row[options["id_field"]] for row in parsed] if options["id_field"] else list(range(len(kept)))
    assert [r.id for r in records] == expected_ids


# Arbitrary bytes, alone or spliced between valid lines; plus the pieces that usually break readers.
byte_pieces = st.one_of(
    st.binary(max_size=64),
    st.sampled_from([
        b'{"instruction": "a", "response": "b"}\n', b'{"instruction": "a", "response": "b", "id": 1}\r\n',
        b"\n", b"\r\n", b"\r", codecs.BOM_UTF8, b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"[" * 100_000,
        b'{"instruction": ' + b"1" * 5000 + b"}\n", b'{"instruction": "\\ud800", "response": "b"}\n',
        b'{"instruction": NaN, "response": Infinity}\n', b'"just a string"\n', b"null\n", b"{}\n",
        b'{"instruction": "a", "response": "b", "id": 99999999999999999999999}\n',
    ]),
)


@FUZZ
@given(st.lists(byte_pieces, max_size=8).map(b"".join), st.sampled_from([None, "id"]))
def test_arbitrary_bytes_give_records_or_a_data_error(tmp_path_factory, data, id_field):
    path = tmp_path_factory.mktemp("fuzz") / "d.jsonl"
    path.write_bytes(data)
    try:
        records = load_records(DataSource(str(path), id_field=id_field), REQUIRED)
    except DataError as e:
        line = _check_message(str(e), str(path), [*REQUIRED, id_field])
        if line is not None:
            assert 1 <= line <= data.count(b"\n") + 1
        return
    _check_records(records, REQUIRED)


@pytest.mark.parametrize("data", [b"", b"\n", b"\r\n\r\n", b"  \n\t\n", codecs.BOM_UTF8, codecs.BOM_UTF8 + b"\n\n"],
                         ids=["empty", "newline", "crlf", "blanks", "bom", "bom-blank-lines"])
def test_empty_files_are_a_clear_error(tmp_path, data):
    path = tmp_path / "d.jsonl"
    path.write_bytes(data)
    with pytest.raises(DataError, match=f"^{re.escape(str(path))}: no records$"):
        load_records(DataSource(str(path)), REQUIRED)


@pytest.mark.parametrize("line, message", [
    # Was a RecursionError.
    (b"[" * 100_000, "line 2: invalid JSON: nested too deeply"),
    # Was a bare ValueError from int().
    (b'{"instruction": ' + b"1" * 5000 + b"}", "line 2: invalid JSON: Exceeds the limit"),
    # Was accepted, then a TypeError inside the tokenizer.
    (b'{"instruction": "\\ud800x", "response": "b"}', "line 2: field 'instruction' holds an unpaired surrogate"),
    # Was accepted, then an OverflowError when a batch's ids became an int64 tensor.
    (b'{"instruction": "a", "response": "b", "id": 9223372036854775808}',
     "line 2: id field 'id' must fit in a signed 64-bit integer, got 9223372036854775808"),
    # Was a 1 MB message.
    (b'{"' + b"k" * 1_000_000 + b'": 1}', "line 2: missing field 'instruction'; record has fields ['kkkk"),
], ids=["deep-nesting", "5000-digit-int", "lone-surrogate", "id-over-int64", "1MB-key"])
def test_former_crashes_are_clear_errors(tmp_path, line, message):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"instruction": "a", "response": "b", "id": -9223372036854775808}\n' + line + b"\n")
    with pytest.raises(DataError, match=re.escape(f"{path} {message}")) as info:
        load_records(DataSource(str(path), id_field="id"), REQUIRED)
    assert len(str(info.value)) < 500


def test_bom_and_crlf_are_tolerated_and_huge_text_is_kept(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [{"instruction": "é" * 1_000_000, "response": " x "}, {"instruction": "b", "response": "c"}]
    path.write_bytes(codecs.BOM_UTF8 + b"\r\n".join(json.dumps(r, ensure_ascii=False).encode() for r in rows))
    assert [r.text for r in load_records(DataSource(str(path)), REQUIRED)] == rows


valid_texts = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40).filter(str.strip)


@FUZZ
@given(st.lists(st.fixed_dictionaries({"q": valid_texts, "response": valid_texts}), min_size=1, max_size=8),
       st.booleans(), st.booleans())
def test_valid_rows_round_trip_exactly(tmp_path_factory, rows, with_ids, ascii_only):
    path = tmp_path_factory.mktemp("fuzz") / "d.jsonl"
    if with_ids:
        rows = [{**row, "uid": 1000 - 7 * i} for i, row in enumerate(rows)]
    path.write_text("".join(json.dumps(r, ensure_ascii=ascii_only) + "\n" for r in rows), encoding="utf-8")
    source = DataSource(str(path), fields={"instruction": "q"}, id_field="uid" if with_ids else None)
    records = load_records(source, REQUIRED)
    assert [r.text for r in records] == [{"instruction": r["q"], "response": r["response"]} for r in rows]
    assert [r.id for r in records] == ([r["uid"] for r in rows] if with_ids else list(range(len(rows))))


# -- Parquet ------------------------------------------------------------------------------------

def _column(kind, values):
    import pyarrow as pa

    types = {"string": pa.string(), "large_string": pa.large_string(), "int64": pa.int64(), "uint64": pa.uint64(),
             "float": pa.float64(), "bool": pa.bool_(), "binary": pa.binary(), "list": pa.list_(pa.string()),
             "struct": pa.struct([("a", pa.string())])}
    if kind == "null":
        return pa.nulls(len(values))
    if kind == "dictionary":
        return pa.array(values, pa.string()).dictionary_encode()
    return pa.array(values, types[kind])


def _values(kind, n):
    scalar = {
        "string": st.text(max_size=10), "large_string": valid_texts, "dictionary": st.sampled_from(["a", " ", ""]),
        "int64": st.integers(*INT64), "uint64": st.integers(0, 2**64 - 1), "float": st.floats(),
        "bool": st.booleans(), "binary": st.binary(max_size=5), "list": st.lists(st.text(max_size=3), max_size=2),
        "struct": st.fixed_dictionaries({"a": st.text(max_size=3)}), "null": st.none(),
    }[kind]
    return st.lists(st.none() | scalar, min_size=n, max_size=n)


@st.composite
def parquet_tables(draw):
    import pyarrow as pa

    n = draw(st.integers(0, 4))
    names = draw(st.lists(st.sampled_from(["instruction", "response", "id", "x", ""]), max_size=5))
    kinds = [draw(st.sampled_from(["string", "large_string", "dictionary", "int64", "uint64", "float", "bool",
                                   "binary", "list", "struct", "null"])) for _ in names]
    return pa.Table.from_arrays([_column(k, draw(_values(k, n))) for k in kinds], names=names) if names else \
        pa.table({"x": pa.array([None] * n, pa.string())})


@settings(FUZZ, max_examples=100)
@given(parquet_tables(), st.sampled_from([None, "id"]))
def test_parquet_with_odd_columns_gives_records_or_a_data_error(tmp_path_factory, table, id_field):
    import pyarrow.parquet as pq

    path = tmp_path_factory.mktemp("fuzz") / "d.parquet"
    pq.write_table(table, path)
    try:
        records = load_records(DataSource(str(path), id_field=id_field), REQUIRED)
    except DataError as e:
        record = _check_message(str(e), str(path), [*REQUIRED, id_field], where="record")
        if record is not None:
            assert 0 <= record < table.num_rows
        return
    _check_records(records, REQUIRED)
    rows = table.to_pylist()
    assert [r.text for r in records] == [{c: row[c] for c in REQUIRED} for row in rows]
    assert [r.id for r in records] == ([row["id"] for row in rows] if id_field else list(range(len(rows))))
