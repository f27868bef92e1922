"""Writing a picture file: its directory created, the bytes written to a temporary name, then renamed."""
from __future__ import annotations

import os
from typing import Any, Callable

from utils.atomic import make_dirs, write_atomically


def write_picture(out_path: str, write: Callable[[Any], None]) -> str:
    """`write(f)` into a binary file that appears at `out_path` only when complete; returns `out_path`."""
    directory = os.path.dirname(out_path)
    if directory:
        make_dirs(directory)
    write_atomically(out_path, write, "wb")
    return out_path
