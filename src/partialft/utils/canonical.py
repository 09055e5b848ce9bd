"""Byte-identical safetensors files for identical tensors and metadata.

safetensors writes its JSON header from a hash map, so the order of the ``__metadata__`` keys
(and with it the file's SHA-256) changes from one process to the next although every tensor is
the same. Users and CI compare checkpoints by hash, so :func:`canonicalize` rewrites the header
with sorted keys. It is written by hand because safetensors has no option for it; the format is
small and fixed: an 8-byte little-endian header length, the JSON header (padded with spaces),
then the tensor data, whose offsets are relative to the data's start. The sorted header has the
same bytes as the original in another order, so it is written over the original in place, padded
with spaces to the original length: the data is not moved.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path


def canonicalize(path: str | Path) -> None:
    """Sort the JSON header of safetensors file ``path`` in place (call it on a temporary file
    before it is moved into place)."""
    with open(path, "r+b") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(size))
        text = json.dumps(header, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode()
        if len(text) > size:  # never: the same JSON in another order is as long
            raise ValueError(f"{path}: sorted safetensors header is longer than the original")
        fh.seek(8)
        fh.write(text + b" " * (size - len(text)))
