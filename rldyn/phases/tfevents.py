"""Scalars from TensorBoard event files, without TensorFlow or protobuf.

An event file is a TFRecord stream: each record is `uint64 length`, `uint32
masked CRC-32C of the length`, `length` bytes, `uint32 masked CRC-32C of the
bytes`; each record is a serialised `tensorflow.Event` protobuf. Only the few
fields that carry scalars are decoded, straight from the protobuf wire format:

    Event      { int64 step = 2; Summary summary = 5; }
    Summary    { repeated Value value = 1; }
    Value      { string tag = 1; float simple_value = 2; TensorProto tensor = 8; }
    TensorProto{ DataType dtype = 1; TensorShapeProto tensor_shape = 2;
                 bytes tensor_content = 4; repeated float float_val = 5;
                 repeated double double_val = 6; repeated int32 int_val = 7;
                 repeated int64 int64_val = 10; repeated int32 half_val = 13; }

`simple_value` is what tensorboardX / torch.utils.tensorboard write by default;
a one-element numeric `tensor` is what TF2's `tf.summary.scalar` and
tensorboardX's `new_style=True` write. Histograms, images, text and graphs are
skipped. Reading never raises on bad content: a record with a wrong checksum or
undecodable bytes is counted and skipped; a broken length field ends the file
(the framing is lost), and so does a torn last record.
"""
from __future__ import annotations

import dataclasses
import math
import os
import struct
from typing import Iterator

_CRC_CHECK_MAX = 1 << 16  # verify the data checksum of records up to this size (scalars)
_MAX_FILES = 10_000


def _crc_table() -> list[int]:
  table = []
  for i in range(256):
    c = i
    for _ in range(8):
      c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1  # Castagnoli, reflected
    table.append(c)
  return table


_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli) of data, as TFRecord uses it."""
  crc = 0xFFFFFFFF
  table = _TABLE
  for b in data:
    crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def looks_like_tfrecord(head: bytes) -> bool:
  """True if the first 12 bytes are a TFRecord length with a valid checksum."""
  return len(head) >= 12 and masked_crc(head[:8]) == struct.unpack("<I", head[8:12])[0]


@dataclasses.dataclass
class EventStats:
  """What reading the event files met."""
  files: int = 0
  events: int = 0           # records decoded as events
  bad_records: int = 0      # checksum mismatch or undecodable protobuf
  truncated: int = 0        # files that ended inside a record or lost their framing


class _Malformed(Exception):
  pass


def _varint(buf: bytes, i: int) -> tuple[int, int]:
  result = shift = 0
  while True:
    if i >= len(buf) or shift > 63:
      raise _Malformed
    b = buf[i]
    i += 1
    result |= (b & 0x7F) << shift
    if not b & 0x80:
      return result, i
    shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
  """(field number, wire type, value) of one protobuf message."""
  i, n = 0, len(buf)
  while i < n:
    key, i = _varint(buf, i)
    field, wire = key >> 3, key & 7
    if wire == 0:
      value, i = _varint(buf, i)
    elif wire in (1, 5):
      size = 8 if wire == 1 else 4
      if i + size > n:
        raise _Malformed
      value, i = buf[i:i + size], i + size
    elif wire == 2:
      size, i = _varint(buf, i)
      if i + size > n:
        raise _Malformed
      value, i = buf[i:i + size], i + size
    else:  # groups (3, 4) are not used by these messages
      raise _Malformed
    yield field, wire, value


def _signed(v: int) -> int:
  return v - (1 << 64) if v >= 1 << 63 else v


def _packed_varints(v: int | bytes) -> list[int]:
  if isinstance(v, int):
    return [_signed(v)]
  out, i = [], 0
  while i < len(v):
    x, i = _varint(v, i)
    out.append(_signed(x))
  return out


# DataType enum values (tensorflow/core/framework/types.proto) -> struct code, size.
_DT_FLOAT, _DT_DOUBLE, _DT_INT32, _DT_INT64, _DT_BFLOAT16, _DT_HALF = 1, 2, 3, 9, 14, 19
_CONTENT = {_DT_FLOAT: "<f", _DT_DOUBLE: "<d", _DT_INT32: "<i", _DT_INT64: "<q",
            _DT_HALF: "<e"}


def _bfloat16(bits: int) -> float:
  return struct.unpack("<f", struct.pack("<I", (bits & 0xFFFF) << 16))[0]


def _tensor_scalar(buf: bytes) -> float | None:
  """The value of a one-element numeric TensorProto, else None."""
  dtype, dims, vals, content = 0, [], [], b""
  for f, w, v in _fields(buf):
    if f == 1 and w == 0:
      dtype = v
    elif f == 2 and w == 2:
      for g, gw, gv in _fields(v):
        if g == 2 and gw == 2:  # Dim { int64 size = 1; }
          dims.append(next((_signed(s) for h, hw, s in _fields(gv) if h == 1 and hw == 0), 0))
    elif f == 4 and w == 2:
      content = v
    elif f == 5:
      vals += (struct.unpack(f"<{len(v) // 4}f", v[:len(v) // 4 * 4]) if w in (2, 5) else [])
    elif f == 6:
      vals += (struct.unpack(f"<{len(v) // 8}d", v[:len(v) // 8 * 8]) if w in (1, 2) else [])
    elif f in (7, 10) and w in (0, 2):
      vals += _packed_varints(v)
    elif f == 13 and w in (0, 2):
      bits = _packed_varints(v)
      if dtype == _DT_BFLOAT16:
        vals += [_bfloat16(b) for b in bits]
      else:
        vals += [struct.unpack("<e", struct.pack("<H", b & 0xFFFF))[0] for b in bits]
  if any(d != 1 for d in dims):
    return None
  if content:
    if dtype == _DT_BFLOAT16 and len(content) == 2:
      return _bfloat16(struct.unpack("<H", content)[0])
    code = _CONTENT.get(dtype)
    if code is None or len(content) != struct.calcsize(code):
      return None
    return float(struct.unpack(code, content)[0])
  if dtype not in (*_CONTENT, _DT_BFLOAT16) or len(vals) != 1:
    return None
  return float(vals[0])


def parse_event(buf: bytes) -> tuple[int, dict[str, float]]:
  """(step, {tag: value}) of one serialised Event; raises _Malformed."""
  step, summary = 0, b""
  for f, w, v in _fields(buf):
    if f == 2 and w == 0:
      step = _signed(v)
    elif f == 5 and w == 2:
      summary = v
  scalars: dict[str, float] = {}
  for f, w, v in _fields(summary):
    if f != 1 or w != 2:
      continue
    tag, value = None, None
    for g, gw, gv in _fields(v):
      if g == 1 and gw == 2:
        tag = gv.decode("utf-8", errors="replace")
      elif g == 2 and gw == 5:
        value = struct.unpack("<f", gv)[0]
      elif g == 8 and gw == 2:
        value = _tensor_scalar(gv)
    if tag is not None and value is not None:
      scalars[tag] = float(value)
  return step, scalars


def _records(f, size: int, stats: EventStats) -> Iterator[bytes]:
  while True:
    header = f.read(12)
    if not header:
      return
    if len(header) < 12 or not looks_like_tfrecord(header):
      stats.truncated += 1
      return
    length = struct.unpack("<Q", header[:8])[0]
    if length + 4 > size - f.tell():
      stats.truncated += 1
      return
    data, crc = f.read(length), f.read(4)
    if length <= _CRC_CHECK_MAX and masked_crc(data) != struct.unpack("<I", crc)[0]:
      stats.bad_records += 1
      continue
    yield data


def event_files(path: str) -> list[str]:
  """The event files at path: the file itself, or every `*tfevents*` file under a folder.

  Sorted by the timestamp in their names (`events.out.tfevents.<time>.<host>...`),
  so a resumed run's later files override earlier values of the same step.
  """
  if not os.path.isdir(path):
    return [path]
  found = []
  for root, dirs, files in os.walk(path):
    dirs.sort()
    found += [os.path.join(root, n) for n in files if "tfevents" in n]
    if len(found) > _MAX_FILES:
      break

  def stamp(p: str) -> tuple[float, str]:
    parts = os.path.basename(p).split("tfevents.", 1)[-1].split(".")
    try:
      t = float(parts[0])
    except ValueError:
      t = math.inf
    return (t, p)
  return sorted(found[:_MAX_FILES], key=stamp)


def read_scalars(path: str) -> tuple[Iterator[tuple[int, dict[str, float]]], EventStats]:
  """Scalar summaries of the event file(s) at path: ((step, {tag: value}) per event, stats).

  The iterator fills `stats` as it goes; an event without scalars yields nothing.
  """
  stats = EventStats()

  def gen():
    for name in event_files(path):
      stats.files += 1
      size = os.path.getsize(name)
      with open(name, "rb") as f:
        for data in _records(f, size, stats):
          try:
            step, scalars = parse_event(data)
          except (_Malformed, struct.error, ValueError, TypeError, OverflowError):
            stats.bad_records += 1
            continue
          stats.events += 1
          if scalars:
            yield step, scalars
  return gen(), stats
