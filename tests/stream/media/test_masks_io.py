"""pedsam.stream.media.masks_io: COCO RLE round trips and the JSON Lines record file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pycocotools.mask as coco_mask
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pedsam.stream.errors import ConfigError, MediaError
from pedsam.stream.media.masks_io import MaskRecordWriter, decode_rle, encode_rle, read_records

masks = st.tuples(st.integers(0, 40), st.integers(0, 40)).flatmap(
    lambda hw: arrays(np.bool_, hw)
)


@settings(max_examples=150, deadline=None)
@given(masks)
@example(np.zeros((17, 23), bool))
@example(np.ones((17, 23), bool))
@example(np.ones((1, 1), bool))
@example(np.hypot(*np.mgrid[-150:150, -100:100]) < 80)  # long runs: multi-character counts
def test_rle_round_trip(mask: np.ndarray) -> None:
    rle = encode_rle(mask)
    assert rle["size"] == [mask.shape[0], mask.shape[1]]
    assert isinstance(rle["counts"], str)
    assert json.loads(json.dumps(rle)) == rle
    decoded = decode_rle(rle)
    assert decoded.dtype == np.bool_ and decoded.shape == mask.shape
    assert decoded.flags.c_contiguous
    assert (decoded == mask).all()
    if mask.size:  # pycocotools agrees on the area, so its own readers see the same mask
        assert coco_mask.area({"size": rle["size"], "counts": rle["counts"].encode()}) == mask.sum()


def test_rle_runs_go_down_columns() -> None:
    """COCO counts in Fortran order: 5 zeros, then one pixel at row 2 of column 1."""
    mask = np.zeros((3, 4), bool)
    mask[2, 1] = True
    assert (decode_rle({"size": [3, 4], "counts": [5, 1, 6]}) == mask).all()
    assert encode_rle(mask)["counts"] == "516"
    assert (decode_rle({"size": [3, 4], "counts": b"516"}) == mask).all()


def test_rle_not_transposed_for_non_square_masks() -> None:
    mask = np.zeros((2, 5), bool)
    mask[0, :] = True  # the top row: runs alternate 1 on, 1 off down each column
    assert encode_rle(mask)["counts"] == coco_mask.encode(np.asfortranarray(mask, np.uint8))[
        "counts"
    ].decode()
    assert (decode_rle(encode_rle(mask)) == mask).all()


@pytest.mark.parametrize(
    "rle",
    [
        {"counts": "516"},
        {"size": [3], "counts": "516"},
        {"size": [3, -4], "counts": "516"},
        {"size": [3, 4], "counts": 5},
        {"size": [3, 4], "counts": [5, 1]},
        {"size": [3, 4], "counts": "0M"},
        {"size": [3, 4], "counts": "é"},
    ],
)
def test_decode_rejects_malformed_rle(rle: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        decode_rle(rle)


@pytest.mark.parametrize("bad", [np.zeros((3, 4), np.uint8), np.zeros((3, 4, 1), bool)])
def test_encode_rejects_non_2d_bool(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        encode_rle(bad)


def test_writer_flushes_whole_lines_as_it_goes(tmp_path: Path) -> None:
    path = tmp_path / "masks.jsonl"
    mask = np.zeros((6, 8), bool)
    mask[1:3, 2:5] = True
    with MaskRecordWriter(path) as writer:
        for i in range(3):
            record = {"frame": i, "score": np.float32(0.5), "area": np.int64(6)}
            record["objects"] = [{"id": 0, "rle": encode_rle(mask)}]
            writer.write(record)
            assert writer.records_written == i + 1
            # Read while the writer is still open: every record so far is a whole line.
            text = path.read_text()
            assert text.endswith("\n") and text.count("\n") == i + 1
            assert [json.loads(line)["frame"] for line in text.splitlines()] == list(range(i + 1))
    records = read_records(path)
    assert len(records) == 3
    assert records[2]["score"] == 0.5 and records[2]["area"] == 6
    assert (decode_rle(records[1]["objects"][0]["rle"]) == mask).all()


@pytest.mark.parametrize(
    ("record", "error"),
    [
        ({"score": math.nan}, ValueError),
        ({"score": math.inf}, ValueError),
        ({"mask": np.zeros((2, 2), bool)}, TypeError),
        ({"thing": object()}, TypeError),
    ],
)
def test_writer_refuses_records_json_cannot_hold(
    tmp_path: Path, record: dict[str, object], error: type[Exception]
) -> None:
    path = tmp_path / "masks.jsonl"
    with MaskRecordWriter(path) as writer:
        writer.write({"frame": 0})
        with pytest.raises(error):
            writer.write(record)
        writer.write({"frame": 1})
        assert writer.records_written == 2
    assert read_records(path) == [{"frame": 0}, {"frame": 1}]  # no partial line left behind


def test_writer_close_idempotent_then_refuses(tmp_path: Path) -> None:
    writer = MaskRecordWriter(tmp_path / "m.jsonl")
    writer.close()
    writer.close()
    with pytest.raises(ValueError):
        writer.write({"frame": 0})


def test_writer_missing_directory_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot create mask file"):
        MaskRecordWriter(tmp_path / "nowhere" / "m.jsonl")


def test_read_records_skips_torn_last_line_only(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text('{"frame": 0}\n\n{"frame": 1}\n{"frame": 2, "obj')
    assert read_records(path) == [{"frame": 0}, {"frame": 1}]
    path.write_text('{"frame": 0}\n{"frame": 1')
    assert read_records(path) == [{"frame": 0}]

    path.write_text('{"frame": 0}\n{"frame": \n{"frame": 2}\n')
    with pytest.raises(ValueError, match=r"m\.jsonl:2: not valid JSON"):
        read_records(path)
    path.write_text('{"frame": 0}\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"m\.jsonl:2: record is a list"):
        read_records(path)
    path.write_text('{"frame": 0}\n{"frame": \n')  # terminated, so not torn: an error
    with pytest.raises(ValueError, match=r"m\.jsonl:2"):
        read_records(path)


def test_read_records_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="cannot read mask records"):
        read_records(tmp_path / "absent.jsonl")
