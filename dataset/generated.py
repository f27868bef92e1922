"""Build a dataset from the offline generators in one call (used by `generate_if_missing`).

Sudoku and Maze: equivalent to running `dataset/generate_<kind>.py` into a temporary CSV directory and
then `dataset/build_<kind>_dataset.py --source-dir` on it. Each kind takes its own builder's augmentation
option: `num_aug` shuffled copies per Sudoku, `aug` for Maze's 8 dihedral transforms. ARC: nothing is
generated; `dataset.build_arc_dataset` builds the ConceptARC tasks shipped in kaggle/concept (all of them,
or the ones `tasks`/`max_tasks` select), with `num_aug` augmented copies per task; each task's test inputs
form the test split, its demonstration pairs the train split.
"""
import os
import tempfile

from dataset import build_maze_dataset, build_sudoku_dataset, generate_maze, generate_sudoku
from dataset.assemble_arc_data import CONCEPT_SUBSET, DEFAULT_CONCEPT_DIR, FILE_PREFIX
from dataset.build_arc_dataset import ArcBuildConfig, build_arc_dataset
from utils.errors import ConfigError

SHIPPED_CONCEPT_PREFIX = os.path.join(DEFAULT_CONCEPT_DIR, FILE_PREFIX)  # kaggle/concept/arc-agi_concept_*.json


def build_concept_arc(output_dir: str, num_aug: int, seed: int, tasks: list[str] | None,
                      max_tasks: int | None) -> str:
    """The shipped ConceptARC tasks (or a selection) as an ARC dataset, tested on their own test inputs."""
    metadata = build_arc_dataset(ArcBuildConfig(input_file_prefix=SHIPPED_CONCEPT_PREFIX, output_dir=output_dir,
                                                subsets=[CONCEPT_SUBSET], test_set_name=CONCEPT_SUBSET, seed=seed,
                                                num_aug=num_aug, tasks=tasks, max_tasks=max_tasks), progress=False)
    train, test = metadata["train"], metadata["test"]
    print(f"Wrote {output_dir}: {test.total_groups} ConceptARC tasks x up to {num_aug + 1} versions, "
          f"train {train.total_puzzles * train.mean_puzzle_examples:.0f} examples, "
          f"test {test.total_puzzles * test.mean_puzzle_examples:.0f} examples")
    return output_dir


def build_generated_dataset(output_dir: str, kind: str, num_train: int | None = None, num_test: int | None = None,
                            num_aug: int = 0, aug: bool = False, seed: int = 0, blanks: int | None = None,
                            min_path_length: int | None = None, tasks: list[str] | None = None,
                            max_tasks: int | None = None) -> str:
    if kind == "arc":
        return build_concept_arc(output_dir, num_aug, seed, tasks, max_tasks)
    if kind == "sudoku" and aug:
        raise ConfigError("aug (8 dihedral transforms) is Maze's augmentation; Sudoku takes num_aug shuffled copies.")
    if kind == "maze" and num_aug:
        raise ConfigError("num_aug counts Sudoku's shuffled copies; Maze takes aug=True (its 8 dihedral transforms).")
    if kind not in ("sudoku", "maze"):
        raise ValueError(f"unknown generated dataset kind {kind!r}; use sudoku, maze or arc")
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
