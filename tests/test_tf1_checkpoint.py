"""The TF1 ``tf.train.Saver`` checkpoint reader, against ``tf.train.load_checkpoint`` dumps (.npz)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vidlight import WeightsError
from vidlight.tf1_checkpoint import read_tf1_checkpoint
from vidlight.weights import read_checkpoint

from reference import require

CHECKPOINTS = [
    "kind/decom_net_train",
    "kind/illumination_adjust_net_train",
    "kind_plus/decom_model",
    "kind_plus/illu_model",
]


def _assert_same(tensors: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert set(tensors) == set(expected)
    for name, array in expected.items():
        got = tensors[name]
        assert got.dtype == array.dtype, name
        assert got.shape == array.shape, name
        assert got.tobytes() == array.tobytes(), name


@pytest.fixture(params=CHECKPOINTS)
def checkpoint_dir(request: pytest.FixtureRequest, shared_dir: Path) -> Path:
    path = shared_dir / "weights" / request.param
    require(path)
    return path


def _expected(checkpoint_dir: Path) -> dict[str, np.ndarray]:
    with np.load(checkpoint_dir.parent / f"{checkpoint_dir.name}.npz", allow_pickle=False) as data:
        return {k: np.array(data[k]) for k in data.files}


def test_matches_tensorflow_bit_for_bit(checkpoint_dir: Path) -> None:
    expected = _expected(checkpoint_dir)
    assert expected
    _assert_same(read_tf1_checkpoint(checkpoint_dir), expected)


def test_dir_prefix_and_index_agree(checkpoint_dir: Path) -> None:
    by_dir = read_tf1_checkpoint(checkpoint_dir)
    _assert_same(read_tf1_checkpoint(checkpoint_dir / "model.ckpt"), by_dir)
    _assert_same(read_tf1_checkpoint(checkpoint_dir / "model.ckpt.index"), by_dir)
    _assert_same(read_tf1_checkpoint(str(checkpoint_dir / "model.ckpt")), by_dir)


def test_read_checkpoint_dispatches_to_tf1(checkpoint_dir: Path) -> None:
    expected = _expected(checkpoint_dir)
    for path in (checkpoint_dir, checkpoint_dir / "model.ckpt", checkpoint_dir / "model.ckpt.index"):
        state = read_checkpoint(path)
        assert all(isinstance(v, torch.Tensor) for v in state.values())
        _assert_same({k: v.numpy() for k, v in state.items()}, expected)


def test_foreign_absolute_path_in_checkpoint_file(shared_dir: Path, tmp_path: Path) -> None:
    source = shared_dir / "weights" / CHECKPOINTS[1]
    require(source)
    for name in ("model.ckpt.index", "model.ckpt.data-00000-of-00001"):
        shutil.copyfile(source / name, tmp_path / name)
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "/somewhere/else/model.ckpt"\n')
    _assert_same(read_tf1_checkpoint(tmp_path), _expected(source))


def _one_line_error(path: Path) -> str:
    with pytest.raises(WeightsError) as info:
        read_tf1_checkpoint(path)
    message = str(info.value)
    assert message and "\n" not in message
    return message


def test_truncated_index_raises(shared_dir: Path, tmp_path: Path) -> None:
    source = shared_dir / "weights" / CHECKPOINTS[0]
    require(source)
    index = (source / "model.ckpt.index").read_bytes()
    (tmp_path / "model.ckpt.index").write_bytes(index[: len(index) // 2])
    shutil.copyfile(source / "model.ckpt.data-00000-of-00001", tmp_path / "model.ckpt.data-00000-of-00001")
    assert "model.ckpt.index" in _one_line_error(tmp_path / "model.ckpt")
    with pytest.raises(WeightsError):
        read_checkpoint(tmp_path / "model.ckpt.index")


def test_garbage_index_raises(tmp_path: Path) -> None:
    (tmp_path / "model.ckpt.index").write_bytes(b"this is not an sstable" * 10)
    assert "magic" in _one_line_error(tmp_path / "model.ckpt.index")
    (tmp_path / "model.ckpt.index").write_bytes(b"x")
    _one_line_error(tmp_path)


def test_truncated_data_file_raises(shared_dir: Path, tmp_path: Path) -> None:
    source = shared_dir / "weights" / CHECKPOINTS[1]
    require(source)
    shutil.copyfile(source / "model.ckpt.index", tmp_path / "model.ckpt.index")
    data = (source / "model.ckpt.data-00000-of-00001").read_bytes()
    (tmp_path / "model.ckpt.data-00000-of-00001").write_bytes(data[: len(data) // 2])
    _one_line_error(tmp_path / "model.ckpt")
    (tmp_path / "model.ckpt.data-00000-of-00001").unlink()
    assert "does not exist" in _one_line_error(tmp_path / "model.ckpt")


def test_corrupt_tensor_bytes_fail_crc(shared_dir: Path, tmp_path: Path) -> None:
    source = shared_dir / "weights" / CHECKPOINTS[1]
    require(source)
    shutil.copyfile(source / "model.ckpt.index", tmp_path / "model.ckpt.index")
    data = bytearray((source / "model.ckpt.data-00000-of-00001").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "model.ckpt.data-00000-of-00001").write_bytes(bytes(data))
    assert "CRC" in _one_line_error(tmp_path / "model.ckpt")


def test_missing_checkpoint_raises(tmp_path: Path) -> None:
    _one_line_error(tmp_path / "nothing.ckpt")
    with pytest.raises(WeightsError):
        read_checkpoint(tmp_path / "nothing.ckpt.index")


# A BundleEntryProto written by hand from tensorflow/core/protobuf/tensor_bundle.proto and
# tensor_shape.proto: dtype = 1, shape = 2, size = 5; TensorShapeProto: dim = 2 (Dim.size = 1),
# unknown_rank = 3.
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _number_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _message_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _entry(unknown_rank: int | None) -> bytes:
    shape = b"".join(_message_field(2, _number_field(1, d)) for d in (2, 3))
    if unknown_rank is not None:
        shape += _number_field(3, unknown_rank)
    return _number_field(1, 1) + _message_field(2, shape) + _number_field(5, 24)


@pytest.mark.parametrize(("written", "unknown"), [(None, False), (0, False), (1, True)])
def test_entry_shape_and_its_unknown_rank_flag(written: int | None, unknown: bool) -> None:
    from vidlight.tf1_checkpoint import _parse_entry

    entry = _parse_entry(_entry(written))
    assert (entry.dtype, entry.shape, entry.size, entry.unknown_rank) == (1, [2, 3], 24, unknown)


def test_entry_field_of_the_wrong_wire_type_is_corrupt() -> None:
    from vidlight.tf1_checkpoint import _Corrupt, _parse_entry

    with pytest.raises(_Corrupt, match="number field"):
        _parse_entry(_message_field(1, b"\x01"))  # dtype as bytes
    with pytest.raises(_Corrupt, match="message field"):
        _parse_entry(_number_field(2, 7))  # shape as a number
