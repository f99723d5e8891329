"""A reader of TensorFlow tensor bundles (the V2 checkpoint format) with numpy only, no TensorFlow.

A bundle with prefix `P` is two kinds of files:

- `P.index`: a LevelDB-format table (sorted string keys, prefix-compressed entries in blocks, an index
  block, a 48-byte footer ending in a magic number). The entry with the empty key is a
  `BundleHeaderProto` (number of shards, endianness); every other key is a variable name whose value
  is a `BundleEntryProto`: dtype, shape, shard, offset and size of its bytes, and their masked CRC32C.
  TensorFlow writes the blocks uncompressed, each followed by a type byte and a masked CRC32C.
- `P.data-SSSSS-of-NNNNN`: the raw tensor bytes (little-endian), one file per shard.

`read_bundle` checks every block's and every tensor's CRC32C (`google-crc32c`, Google's C library), so
that a damaged, truncated or foreign file is a one-line B2MError naming it, never silently wrong weights.
Both protobufs are decoded by hand from the wire format (a few fields of each): the reader needs
neither TensorFlow nor generated protobuf classes.

Optimizer state: a training checkpoint also holds the optimizer's slots (Adam's `<var>/Adam` and
`<var>/Adam_1`, and `beta1_power`/`beta2_power`). Their bytes are checked like all others, so damage
anywhere in the files is caught, but they are left out of the result unless `optimizer=True`.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np

from b2m.core.errors import B2MError

# LevelDB's table magic number: the last 8 bytes of an .index file.
TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48  # two block handles padded to 40 bytes, then the magic
BLOCK_TRAILER_SIZE = 5  # compression type (1 byte) + masked CRC32C (4 bytes)
CRC_MASK_DELTA = 0xA282EAD8

# TensorFlow's DataType enum (types.proto) -> numpy, little-endian. DT_STRING (7) and the quantized and
# resource types are not plain byte arrays and are refused.
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 4: np.dtype("u1"), 5: np.dtype("<i2"),
    6: np.dtype("i1"), 9: np.dtype("<i8"), 10: np.dtype("?"), 17: np.dtype("<u2"), 19: np.dtype("<f2"),
    22: np.dtype("<u4"), 23: np.dtype("<u8"),
}

# Names of optimizer state rather than of the model (tf.train.AdamOptimizer's slots and accumulators).
OPTIMIZER_NAME = re.compile(r"(/Adam(_\d+)?$)|(^|/)beta[12]_power$")


def masked_crc32c(data: bytes) -> int:
    """LevelDB's masked CRC32C of `data`: the CRC rotated right by 15 bits plus a constant, so that a CRC
    stored inside CRC-checked data does not check itself."""
    import google_crc32c

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + CRC_MASK_DELTA) & 0xFFFFFFFF


def read_bundle(prefix: Path, *, optimizer: bool = False) -> dict[str, np.ndarray]:
    """The tensors of the bundle at `prefix`, by variable name (e.g. `conv2d/kernel`), each a writable
    numpy array of its dtype and shape (float32 for model weights).

    `prefix` is the path the files share before `.index`; a folder stands for the files named `.index`
    and `.data-…` inside it (musicnn saves its checkpoints so). Optimizer slots are checked but left out
    unless `optimizer` (see the module's docstring). A missing, damaged, truncated or foreign file is a
    B2MError naming it.
    """
    prefix = Path(prefix)
    base = str(prefix) + "/" if prefix.is_dir() else str(prefix)
    index_path = Path(base + ".index")
    try:
        index = index_path.read_bytes()
    except OSError as err:
        raise B2MError(f"{index_path}: cannot read the checkpoint index ({err.strerror or err})") from None
    entries = _read_table(index, index_path)
    if b"" not in entries:
        raise B2MError(f"{index_path}: not a TensorFlow tensor bundle (no bundle header)")
    header = _fields(entries.pop(b""), index_path)
    num_shards = _int(header, 1, index_path)
    if _int(header, 2, index_path) != 0:  # BundleHeaderProto.Endianness: LITTLE = 0
        raise B2MError(f"{index_path}: a big-endian tensor bundle; only little-endian bundles are read")
    if num_shards < 1:
        raise B2MError(f"{index_path}: a tensor bundle header with {num_shards} shards")

    shards: dict[int, bytes] = {}
    tensors: dict[str, np.ndarray] = {}
    for key, value in entries.items():
        name = key.decode("utf-8", errors="replace")
        entry = _fields(value, index_path)
        dtype_code, shard = _int(entry, 1, index_path), _int(entry, 3, index_path)
        offset, size, crc = _int(entry, 4, index_path), _int(entry, 5, index_path), _int(entry, 6, index_path)
        if 7 in entry:
            raise B2MError(f"{index_path}: {name} is a partitioned variable (slices); not supported")
        if dtype_code not in DTYPES:
            raise B2MError(f"{index_path}: {name} has TensorFlow dtype {dtype_code}, which this reader does not "
                           f"read (numeric tensors only)")
        shape = _shape(entry.get(2, [b""])[0], index_path, name)
        if not 0 <= shard < num_shards:
            raise B2MError(f"{index_path}: {name} lies in shard {shard} of a {num_shards}-shard bundle")
        data_path = Path(f"{base}.data-{shard:05d}-of-{num_shards:05d}")
        if shard not in shards:
            shards[shard] = _read_shard(data_path)
        raw = shards[shard][offset:offset + size]
        dtype = DTYPES[dtype_code]
        if len(raw) != size:
            raise B2MError(f"{data_path}: truncated ({name} needs bytes {offset}..{offset + size}, the file has "
                           f"{len(shards[shard])})")
        if masked_crc32c(raw) != crc:
            raise B2MError(f"{data_path}: the bytes of {name} fail their CRC32C check (a damaged file)")
        if size != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise B2MError(f"{index_path}: {name} has {size} bytes for shape {tuple(shape)} of {dtype}")
        if optimizer or not OPTIMIZER_NAME.search(name):
            tensors[name] = np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
    return tensors


def _read_shard(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise B2MError(f"{path}: cannot read the checkpoint data ({err.strerror or err})") from None


# ----------------------------------------------------------------- LevelDB table
def _read_table(data: bytes, path: Path) -> dict[bytes, bytes]:
    """Every key and value of a LevelDB table file (`data`), in key order; each block's CRC is checked."""
    if len(data) < FOOTER_SIZE or struct.unpack("<Q", data[-8:])[0] != TABLE_MAGIC:
        raise B2MError(f"{path}: not a TensorFlow checkpoint index (no table footer: a truncated or foreign file)")
    footer = data[-FOOTER_SIZE:]
    pos = 0
    _meta_offset, pos = _varint(footer, pos, path)  # the metaindex block: empty in TensorFlow's tables
    _meta_size, pos = _varint(footer, pos, path)
    index_offset, pos = _varint(footer, pos, path)
    index_size, pos = _varint(footer, pos, path)
    entries: dict[bytes, bytes] = {}
    for _last_key, handle in _block_entries(_block(data, index_offset, index_size, path), path):
        offset, at = _varint(handle, 0, path)
        size, _ = _varint(handle, at, path)
        for key, value in _block_entries(_block(data, offset, size, path), path):
            entries[key] = value
    return entries


def _block(data: bytes, offset: int, size: int, path: Path) -> bytes:
    """The contents of the block at (`offset`, `size`), its type byte and CRC checked."""
    end = offset + size + BLOCK_TRAILER_SIZE
    if end > len(data) - FOOTER_SIZE:
        raise B2MError(f"{path}: a block runs past the end of the file (a truncated or damaged file)")
    contents, kind = data[offset:offset + size], data[offset + size]
    (crc,) = struct.unpack("<I", data[offset + size + 1:end])
    if masked_crc32c(data[offset:offset + size + 1]) != crc:
        raise B2MError(f"{path}: a block of the index fails its CRC32C check (a damaged file)")
    if kind != 0:  # 0: no compression; TensorFlow never compresses bundle indexes
        raise B2MError(f"{path}: a compressed index block (type {kind}); only uncompressed tables are read")
    return contents


def _block_entries(block: bytes, path: Path) -> list[tuple[bytes, bytes]]:
    """A block's (key, value) pairs. Keys are prefix-compressed: each entry stores how many bytes it shares
    with the previous key, then the rest; the block ends with its restart offsets and their count."""
    if len(block) < 4:
        raise B2MError(f"{path}: an index block too short to hold its restart count")
    (num_restarts,) = struct.unpack("<I", block[-4:])
    limit = len(block) - 4 - 4 * num_restarts
    if limit < 0:
        raise B2MError(f"{path}: an index block with an impossible restart count ({num_restarts})")
    pairs: list[tuple[bytes, bytes]] = []
    key, pos = b"", 0
    while pos < limit:
        shared, pos = _varint(block, pos, path)
        unshared, pos = _varint(block, pos, path)
        value_length, pos = _varint(block, pos, path)
        if shared > len(key) or pos + unshared + value_length > limit:
            raise B2MError(f"{path}: a malformed entry in an index block")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        pairs.append((key, block[pos:pos + value_length]))
        pos += value_length
    return pairs


def _varint(data: bytes, pos: int, path: Path) -> tuple[int, int]:
    """The unsigned LEB128 varint at `pos` and the position after it."""
    result, shift = 0, 0
    while True:
        if pos >= len(data) or shift > 63:
            raise B2MError(f"{path}: a malformed varint (a truncated or damaged file)")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


# ----------------------------------------------------------------- protobuf wire format
def _fields(message: bytes, path: Path) -> dict[int, list]:
    """The fields of a protobuf message by number: ints for varint and fixed fields, bytes for
    length-delimited ones (nested messages), each field a list (repeated fields have several)."""
    fields: dict[int, list] = {}
    pos = 0
    while pos < len(message):
        tag, pos = _varint(message, pos, path)
        number, wire = tag >> 3, tag & 7
        value: int | bytes | None = None
        if wire == 0:
            value, pos = _varint(message, pos, path)
        elif wire in (1, 5):  # fixed64, fixed32 (BundleEntryProto.crc32c)
            width = 8 if wire == 1 else 4
            if pos + width <= len(message):
                value = int.from_bytes(message[pos:pos + width], "little")
            pos += width
        elif wire == 2:
            length, pos = _varint(message, pos, path)
            value, pos = message[pos:pos + length], pos + length
        if value is None or pos > len(message):
            raise B2MError(f"{path}: a malformed protobuf in the index (a damaged or foreign file)")
        fields.setdefault(number, []).append(value)
    return fields


def _int(fields: dict[int, list], number: int, path: Path) -> int:
    """The integer field `number` (0 when absent, as protobuf defaults it; the last one if repeated)."""
    values = fields.get(number)
    if not values:
        return 0
    if not isinstance(values[-1], int):
        raise B2MError(f"{path}: protobuf field {number} of the index is not an integer (a damaged or foreign file)")
    return values[-1]


def _shape(message: bytes, path: Path, name: str) -> list[int]:
    """The dimensions of a TensorShapeProto (field 2: repeated Dim, whose field 1 is the size)."""
    shape = _fields(message, path)
    if _int(shape, 3, path):
        raise B2MError(f"{path}: {name} has an unknown rank")
    dims = [_int(_fields(dim, path), 1, path) for dim in shape.get(2, [])]
    if any(d < 0 or d >= 1 << 40 for d in dims):  # int64 -1 arrives as a huge varint
        raise B2MError(f"{path}: {name} has an unknown or impossible dimension ({dims})")
    return dims
