"""Reading the four source formats and formatting rows, with clear errors for bad data."""

from __future__ import annotations

import csv

import pytest

from harness.data import load_data, read_rows
from harness.errors import DataError
from harness.suite import load_suite

from .conftest import REVIEWS, make_suite, write_jsonl

ROWS = [{"id": f"r{i}", "text": t, "label": y} for i, (t, y) in enumerate(REVIEWS[:4])]


def test_jsonl_csv_parquet_and_hf_on_disk_read_the_same(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_jsonl(tmp_path / "a.jsonl", ROWS)
    with (tmp_path / "a.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "text", "label"])
        writer.writeheader()
        writer.writerows(ROWS)
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "a.parquet")
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "hfds"))
    datasets.DatasetDict({"test": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "hfdict"))
    for source in ("a.jsonl", "a.csv", "a.parquet", "hf:hfds", "hf:hfdict:test"):
        rows, _ = read_rows(source, tmp_path)
        assert rows == ROWS, source


def test_malformed_jsonl_line_is_named(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "ok", "label": "positive"}\n{"text": oops}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: malformed JSON"):
        read_rows("bad.jsonl", tmp_path)


def test_ragged_csv_row_is_named(tmp_path):
    (tmp_path / "bad.csv").write_text("text,label\nfine,positive\ntoo,many,fields\n")
    with pytest.raises(DataError, match=r"bad.csv:3: 3 fields, the header has 2"):
        read_rows("bad.csv", tmp_path)


def test_missing_column_lists_available_ones(tmp_path, tiny_model_dir):
    path = make_suite(tmp_path, tiny_model_dir)
    write_jsonl(tmp_path / "data" / "train.jsonl", [{"review": "x", "label": "positive"}])
    with pytest.raises(DataError) as err:
        load_data(load_suite(path))
    assert "column(s) text" in err.value.message and "available: review, label" in err.value.message


def test_labels_outside_the_label_set_show_the_first_rows(tmp_path, tiny_model_dir):
    path = make_suite(tmp_path, tiny_model_dir)
    write_jsonl(tmp_path / "data" / "test.jsonl", [{"text": "x", "label": "positive"},
                                                  {"text": "y", "label": "Positive"}])
    with pytest.raises(DataError, match=r"1 target\(s\) outside task.labels .*row 2: 'Positive'"):
        load_data(load_suite(path))


def test_examples_are_formatted_from_templates(tmp_path, tiny_model_dir):
    data = load_data(load_suite(make_suite(tmp_path, tiny_model_dir)))
    first = data.train[0]
    assert first.prompt == f"Review: {REVIEWS[0][0]}\nIs this review positive or negative?"
    assert first.target == first.label == "positive"
    assert len(data.train) == 8 and len(data.test) == 6
