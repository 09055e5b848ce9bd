"""The study's fixed Fashion-MNIST subset, written as idx files (see study.py)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

FASHION_SRC = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                 "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx_gz(path: Path) -> Any:
    """An unsigned-byte idx file (gzipped or not) as a NumPy array."""
    import numpy as np

    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(raw[3])]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * raw[3]).reshape(shape)


def write_idx(path: Path, array: Any) -> None:
    """Write ``array`` (uint8) as an uncompressed idx file, atomically."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big")
                                                   for n in array.shape)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(header + array.tobytes())
    tmp.replace(path)


def make_fashion_subset(per_class: int, dest: Path) -> None:
    """Write the study's Fashion-MNIST subset (first ``per_class`` of each class, all test)."""
    import numpy as np

    marker = dest / "SUBSET.json"
    if marker.is_file():
        return
    src = {k: [FASHION_SRC / f"{n}.gz" for n in names] for k, names in FASHION_FILES.items()}
    if not all(f.is_file() for files in src.values() for f in files):
        raise SystemExit(f"Fashion-MNIST idx files not found under {FASHION_SRC}: run "
                         "'apt-get install -y dataset-fashion-mnist', or leave the dataset out "
                         "with --datasets digits.")
    dest.mkdir(parents=True, exist_ok=True)
    images, labels = (read_idx_gz(f) for f in src["train"])
    keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)]))
    write_idx(dest / FASHION_FILES["train"][0], images[keep])
    write_idx(dest / FASHION_FILES["train"][1], labels[keep])
    for f, name in zip(src["test"], FASHION_FILES["test"]):
        write_idx(dest / name, read_idx_gz(f))
    info = {"source": str(FASHION_SRC), "rule": f"first {per_class} of each class, file order",
            "train_indices": keep.tolist(), "test": "all 10,000 official test images"}
    marker.write_text(json.dumps(info) + "\n")

