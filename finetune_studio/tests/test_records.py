import pytest

from finetune_studio.records import RecordError, read_records_from_bytes


def test_it_reads_text_label_jsonl_and_instruction_records():
    data = (
        b'{"text": "Either party may terminate.", "label": "termination"}\n\n'
        b'{"instruction": "Classify", "input": "Governed by Delaware law.", "output": "governing_law"}\n'
    )
    records = read_records_from_bytes(data, "train.jsonl")
    assert [r.label for r in records] == ["termination", "governing_law"]
    assert records[1].text == "Classify\n\nGoverned by Delaware law."


def test_it_reads_a_json_array_and_csv():
    assert read_records_from_bytes(b'[{"text": "a", "label": "x"}]', "t.json")[0].label == "x"
    csv_records = read_records_from_bytes(b'text,label\n"Hello, world",greeting\n', "t.csv")
    assert csv_records[0].text == "Hello, world"


@pytest.mark.parametrize(
    ("data", "filename", "location", "reason"),
    [
        (b'{"text": "a", "label": "x"}\n{"text": "b"}\n', "t.jsonl", "line 2", "needs 'text' and 'label'"),
        (b'{"text": "a", "label": "x"}\n{oops\n', "t.jsonl", "line 2", "invalid JSON"),
        (b"text,label\na,\n", "t.csv", "line 2", "'label' must be a non-empty string"),
        (b"name,value\na,b\n", "t.csv", "line 1", "header row"),
        (b"[" * 100 + b"]" * 100, "t.json", "file", "nested deeper"),
        (b'{"text": "\xff", "label": "x"}', "t.jsonl", "line 1", "not valid UTF-8"),
    ],
)
def test_a_bad_file_names_the_first_bad_line_and_why(data, filename, location, reason):
    with pytest.raises(RecordError) as info:
        read_records_from_bytes(data, filename)
    assert info.value.location == location
    assert reason in info.value.reason
