"""Read TensorFlow 1.x ``tf.train.Saver`` checkpoints (V2 "tensor bundle" format) without TensorFlow.

A checkpoint is a prefix ``<dir>/model.ckpt`` with an ``.index`` file and one or more
``.data-NNNNN-of-MMMMM`` shards. The index is a LevelDB-style SSTable: a 48-byte footer
(metaindex and index block handles, padding, an 8-byte magic) points at an index block whose
values are handles of data blocks; each data block holds prefix-compressed key/value entries
and a restart array, and each block is followed by a 5-byte trailer (compression type, masked
CRC-32C). Data-block keys are tensor names (the empty key holds the ``BundleHeaderProto``);
values are serialized ``BundleEntryProto`` messages giving dtype, shape, shard, offset, size
and a masked CRC-32C of the raw little-endian C-order tensor bytes.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vidlight.errors import WeightsError

_MAGIC = 0xDB4775248B80FB57
_FOOTER_LEN = 48
_TRAILER_LEN = 5

# TensorFlow DataType enum -> numpy dtype (little-endian).
_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),  # DT_FLOAT
    2: np.dtype("<f8"),  # DT_DOUBLE
    3: np.dtype("<i4"),  # DT_INT32
    4: np.dtype("u1"),  # DT_UINT8
    5: np.dtype("<i2"),  # DT_INT16
    6: np.dtype("i1"),  # DT_INT8
    9: np.dtype("<i8"),  # DT_INT64
    10: np.dtype("?"),  # DT_BOOL
    17: np.dtype("<u2"),  # DT_UINT16
    19: np.dtype("<f2"),  # DT_HALF
    22: np.dtype("<u4"),  # DT_UINT32
    23: np.dtype("<u8"),  # DT_UINT64
}
_DTYPE_NAMES = {
    7: "DT_STRING",
    8: "DT_COMPLEX64",
    14: "DT_BFLOAT16",
    18: "DT_COMPLEX128",
    20: "DT_RESOURCE",
    21: "DT_VARIANT",
}

# Tensors larger than this are not CRC-checked (the pure-Python CRC-32C is slow).
_CRC_CHECK_LIMIT = 16 << 20


class _Corrupt(Exception):
    """Internal: a malformed structure; turned into a WeightsError naming the file."""


# --- CRC-32C (Castagnoli), table-driven ------------------------------------------------------


def _make_crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _make_crc_table()


def _crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _unmask(masked: int) -> int:
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


# --- varints and protobuf wire format ----------------------------------------------------------


def _varint(buf: bytes, pos: int, limit: int | None = None) -> tuple[int, int]:
    end = len(buf) if limit is None else limit
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise _Corrupt("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _Corrupt("varint too long")


def _proto_fields(buf: bytes) -> list[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) for each field of a serialized protobuf message."""
    fields = []
    pos = 0
    n = len(buf)
    while pos < n:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            if pos + 8 > n:
                raise _Corrupt("truncated fixed64 field")
            (value,) = struct.unpack_from("<Q", buf, pos)
            pos += 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > n:
                raise _Corrupt("truncated length-delimited field")
            value = bytes(buf[pos : pos + length])
            pos += length
        elif wire == 5:
            if pos + 4 > n:
                raise _Corrupt("truncated fixed32 field")
            (value,) = struct.unpack_from("<I", buf, pos)
            pos += 4
        else:
            raise _Corrupt(f"unsupported protobuf wire type {wire}")
        fields.append((number, wire, value))
    return fields


# --- SSTable -----------------------------------------------------------------------------------


def _block_handle(buf: bytes, pos: int, limit: int | None = None) -> tuple[int, int, int]:
    offset, pos = _varint(buf, pos, limit)
    size, pos = _varint(buf, pos, limit)
    return offset, size, pos


def _read_block(data: bytes, offset: int, size: int) -> bytes:
    end = offset + size
    if offset < 0 or end + _TRAILER_LEN > len(data):
        raise _Corrupt("block extends past the end of the file (truncated?)")
    block = data[offset:end]
    ctype = data[end]
    (masked,) = struct.unpack_from("<I", data, end + 1)
    if _crc32c(data[offset : end + 1]) != _unmask(masked):
        raise _Corrupt("block checksum mismatch")
    if ctype == 1:
        raise _Corrupt("snappy-compressed blocks are not supported")
    if ctype != 0:
        raise _Corrupt(f"unsupported block compression type {ctype}")
    return block


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise _Corrupt("block too short")
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    restarts_at = len(block) - 4 - 4 * num_restarts
    if restarts_at < 0:
        raise _Corrupt("bad restart array")
    entries = []
    pos = 0
    key = b""
    while pos < restarts_at:
        shared, pos = _varint(block, pos, restarts_at)
        non_shared, pos = _varint(block, pos, restarts_at)
        value_len, pos = _varint(block, pos, restarts_at)
        if shared > len(key) or pos + non_shared + value_len > restarts_at:
            raise _Corrupt("bad block entry")
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        entries.append((key, block[pos : pos + value_len]))
        pos += value_len
    return entries


def _sstable_entries(data: bytes) -> list[tuple[bytes, bytes]]:
    if len(data) < _FOOTER_LEN:
        raise _Corrupt("file shorter than the SSTable footer (truncated?)")
    footer = data[-_FOOTER_LEN:]
    (magic,) = struct.unpack_from("<Q", footer, _FOOTER_LEN - 8)
    if magic != _MAGIC:
        raise _Corrupt("bad SSTable magic (not a TensorFlow checkpoint index, or truncated)")
    _, _, pos = _block_handle(footer, 0, _FOOTER_LEN - 8)  # metaindex handle (unused)
    index_offset, index_size, _ = _block_handle(footer, pos, _FOOTER_LEN - 8)
    entries = []
    for _, handle in _block_entries(_read_block(data, index_offset, index_size)):
        offset, size, _ = _block_handle(handle, 0)
        entries.extend(_block_entries(_read_block(data, offset, size)))
    return entries


# --- bundle ------------------------------------------------------------------------------------


def _number(value: int | bytes) -> int:
    if isinstance(value, bytes):
        raise _Corrupt("a number field holds bytes")
    return value


def _message(value: int | bytes) -> bytes:
    if not isinstance(value, bytes):
        raise _Corrupt("a message field holds a number")
    return value


@dataclass
class _Entry:
    """A ``BundleEntryProto``: where one tensor's bytes lie and what they hold."""

    dtype: int = 0
    shape: list[int] = field(default_factory=list)
    unknown_rank: bool = False
    shard_id: int = 0
    offset: int = 0
    size: int = 0
    crc32c: int | None = None
    sliced: bool = False


def _parse_entry(value: bytes) -> _Entry:
    entry = _Entry()
    for number, _, v in _proto_fields(value):
        if number == 1:
            entry.dtype = _number(v)
        elif number == 2:
            for dnum, _, dim in _proto_fields(_message(v)):
                if dnum == 2:
                    size = 0
                    for snum, _, s in _proto_fields(_message(dim)):
                        if snum == 1:
                            size = _number(s)
                            size = size if size < 1 << 63 else size - (1 << 64)
                    entry.shape.append(size)
                elif dnum == 3 and dim:
                    entry.unknown_rank = True
        elif number == 3:
            entry.shard_id = _number(v)
        elif number == 4:
            entry.offset = _number(v)
        elif number == 5:
            entry.size = _number(v)
        elif number == 6:
            entry.crc32c = _number(v)
        elif number == 7:
            entry.sliced = True
    return entry


def resolve_prefix(path: str | os.PathLike) -> Path:
    """The checkpoint prefix for a prefix, an ``.index`` file or a checkpoint directory."""
    path = Path(path)
    if path.is_dir():
        state = path / "checkpoint"
        if state.is_file():
            match = re.search(r'^model_checkpoint_path:\s*"((?:[^"\\]|\\.)*)"', state.read_text(errors="replace"), re.M)
            if not match:
                raise WeightsError(f"checkpoint file {state} names no model_checkpoint_path")
            named = Path(match.group(1).encode().decode("unicode_escape"))
            candidates = [named] if not named.is_absolute() else []
            candidates = [path / c for c in candidates] + [named, path / named.name]
            for prefix in candidates:
                if Path(f"{prefix}.index").is_file():
                    return prefix
            raise WeightsError(f"checkpoint {named} named in {state} has no .index file in {path}")
        indexes = sorted(path.glob("*.index"))
        if len(indexes) == 1:
            return indexes[0].with_suffix("")
        if not indexes:
            raise WeightsError(f"directory {path} holds no TensorFlow checkpoint (no checkpoint or *.index file)")
        raise WeightsError(f"directory {path} holds several checkpoints and no 'checkpoint' file to choose one")
    if path.suffix == ".index":
        return path.with_suffix("")
    return path


def read_tf1_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a TF1 V2 checkpoint, keyed by variable name (e.g. ``'DecomNet/g_conv1_1/weights'``).

    ``path`` may be the prefix (``.../model.ckpt``), its ``.index`` file or the checkpoint directory.
    """
    prefix = resolve_prefix(path)
    index_path = Path(f"{prefix}.index")
    if not index_path.is_file():
        raise WeightsError(f"checkpoint index {index_path} does not exist")
    try:
        entries = _sstable_entries(index_path.read_bytes())
    except _Corrupt as err:
        raise WeightsError(f"cannot read checkpoint index {index_path}: {err}") from None
    except OSError as err:
        raise WeightsError(f"cannot read checkpoint index {index_path}: {err.strerror}") from None

    num_shards = 1
    parsed: list[tuple[str, _Entry]] = []
    try:
        for key, value in entries:
            if key == b"":
                for number, _, v in _proto_fields(value):
                    if number == 1:
                        num_shards = _number(v)
                    elif number == 2 and v == 1:
                        raise _Corrupt("big-endian checkpoints are not supported")
                continue
            parsed.append((key.decode("utf-8", errors="replace"), _parse_entry(value)))
    except _Corrupt as err:
        raise WeightsError(f"cannot read checkpoint index {index_path}: {err}") from None

    shards: dict[int, bytes] = {}
    tensors: dict[str, np.ndarray] = {}
    for name, entry in parsed:
        where = f"tensor {name!r} in checkpoint {prefix}"
        if entry.sliced:
            raise WeightsError(f"{where} is a partitioned (sliced) variable, which is not supported")
        if entry.unknown_rank:
            raise WeightsError(f"{where} has an unknown shape")
        code = entry.dtype
        if code not in _DTYPES:
            label = _DTYPE_NAMES.get(code, f"enum {code}")
            raise WeightsError(f"{where} has unsupported dtype {label}")
        dtype = _DTYPES[code]
        shape = tuple(entry.shape)
        if any(d < 0 for d in shape):
            raise WeightsError(f"{where} has a negative dimension in shape {shape}")
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if count * dtype.itemsize != entry.size:
            raise WeightsError(f"{where}: shape {shape} does not match its {entry.size} stored bytes")
        shard_id = entry.shard_id
        if shard_id >= num_shards:
            raise WeightsError(f"{where} names shard {shard_id} of only {num_shards}")
        if shard_id not in shards:
            shard_path = Path(f"{prefix}.data-{shard_id:05d}-of-{num_shards:05d}")
            try:
                shards[shard_id] = shard_path.read_bytes()
            except FileNotFoundError:
                raise WeightsError(f"checkpoint data file {shard_path} does not exist") from None
            except OSError as err:
                raise WeightsError(f"cannot read checkpoint data file {shard_path}: {err.strerror}") from None
        data = shards[shard_id]
        start, size = entry.offset, entry.size
        if start + size > len(data):
            raise WeightsError(f"{where} extends past the end of its data file (truncated?)")
        raw = data[start : start + size]
        if entry.crc32c is not None and size <= _CRC_CHECK_LIMIT and _crc32c(raw) != _unmask(entry.crc32c):
            raise WeightsError(f"{where} fails its CRC-32C check (corrupt data file?)")
        tensors[name] = np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=True)
    return tensors
