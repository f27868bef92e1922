"""Content digest of a built puzzle dataset directory: relative path -> sha256 hex.

A `.npy` file is digested by its dtype, shape and array bytes (independent of the .npy header
layout), a `.json` file by its parsed content with sorted keys; other files are ignored. Equal
digests mean equal data. `tests/fixtures/arc1concept-aug2.digest.json` is this digest of the
published builder's output.

    python -m tests.dataset_digest DATASET_DIR
"""
import hashlib
import json
import os
import sys

import numpy as np


def _npy_digest(path: str) -> str:
    array = np.load(path)
    sha = hashlib.sha256(f"{array.dtype.str}|{array.shape}|".encode())
    sha.update(np.ascontiguousarray(array).tobytes())
    return sha.hexdigest()


def _json_digest(path: str) -> str:
    with open(path) as f:
        parsed = json.load(f)
    return hashlib.sha256(json.dumps(parsed, sort_keys=True).encode()).hexdigest()


def digest(root: str) -> dict:
    """{path relative to `root`: sha256 hex} for every .npy and .json file below `root`, keys sorted."""
    result = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if name.endswith(".npy"):
                result[os.path.relpath(path, root)] = _npy_digest(path)
            elif name.endswith(".json"):
                result[os.path.relpath(path, root)] = _json_digest(path)
    return {key: result[key] for key in sorted(result)}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.dataset_digest DATASET_DIR")
    print(json.dumps(digest(sys.argv[1]), indent=1))
