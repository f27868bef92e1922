"""Build a dataset from the offline generators in one call (used by `generate_if_missing`).

Equivalent to running `dataset/generate_<kind>.py` into a temporary CSV directory and then
`dataset/build_<kind>_dataset.py --source-dir` on it.
"""
import tempfile

from dataset import build_maze_dataset, build_sudoku_dataset, generate_maze, generate_sudoku


def build_generated_dataset(output_dir: str, kind: str, num_train: int, num_test: int, num_aug: int = 0, seed: int = 0,
                            blanks: int | None = None, min_path_length: int | None = None) -> str:
    with tempfile.TemporaryDirectory(prefix=f"{kind}-csv-") as csv_dir:
        common = ["--output-dir", csv_dir, "--num-train", str(num_train), "--num-test", str(num_test), "--seed", str(seed)]
        if kind == "sudoku":
            generate_sudoku.main(common + (["--blanks", str(blanks)] if blanks is not None else []))
            build_sudoku_dataset.main(["--source-dir", csv_dir, "--output-dir", output_dir, "--num-aug", str(num_aug),
                                       "--seed", str(seed)])
        elif kind == "maze":
            generate_maze.main(common + (["--min-path-length", str(min_path_length)] if min_path_length else []))
            build_maze_dataset.main(["--source-dir", csv_dir, "--output-dir", output_dir, "--seed", str(seed)]
                                    + (["--aug"] if num_aug else []))
        else:
            raise ValueError(f"unknown generated dataset kind {kind!r}; use sudoku or maze")
    return output_dir
