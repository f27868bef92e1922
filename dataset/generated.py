"""Build a dataset from the offline generators in one call (used by `generate_if_missing`).

Equivalent to running `dataset/generate_<kind>.py` into a temporary CSV directory and then
`dataset/build_<kind>_dataset.py --source-dir` on it. Each kind takes its own builder's augmentation
option: `num_aug` shuffled copies per Sudoku, `aug` for Maze's 8 dihedral transforms.
"""
import tempfile

from dataset import build_maze_dataset, build_sudoku_dataset, generate_maze, generate_sudoku
from utils.errors import ConfigError


def build_generated_dataset(output_dir: str, kind: str, num_train: int, num_test: int, num_aug: int = 0,
                            aug: bool = False, seed: int = 0, blanks: int | None = None,
                            min_path_length: int | None = None) -> str:
    if kind == "sudoku" and aug:
        raise ConfigError("aug (8 dihedral transforms) is Maze's augmentation; Sudoku takes num_aug shuffled copies.")
    if kind == "maze" and num_aug:
        raise ConfigError("num_aug counts Sudoku's shuffled copies; Maze takes aug=True (its 8 dihedral transforms).")
    if kind not in ("sudoku", "maze"):
        raise ValueError(f"unknown generated dataset kind {kind!r}; use sudoku or maze")
    with tempfile.TemporaryDirectory(prefix=f"{kind}-csv-") as csv_dir:
        common = ["--output-dir", csv_dir, "--num-train", str(num_train), "--num-test", str(num_test),
                  "--seed", str(seed)]
        if kind == "sudoku":
            # The CSVs go to a temporary folder, deleted below: not announced (only the built dataset is).
            extra = ["--blanks", str(blanks)] if blanks is not None else []
            generate_sudoku.generate(generate_sudoku.parse_args(common + extra), announce=False)
            build_sudoku_dataset.main(["--source-dir", csv_dir, "--output-dir", output_dir, "--num-aug", str(num_aug),
                                       "--seed", str(seed)])
        else:
            extra = ["--min-path-length", str(min_path_length)] if min_path_length else []
            generate_maze.generate(generate_maze.parse_args(common + extra), announce=False)
            build_maze_dataset.main(["--source-dir", csv_dir, "--output-dir", output_dir, "--seed", str(seed)]
                                    + (["--aug"] if aug else []))
    return output_dir
