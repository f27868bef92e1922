"""CSV sources of the Sudoku-Extreme and Maze-Hard builders, and of their offline generators.

Both published datasets are `train.csv` / `test.csv` with the columns `source,question,answer,rating`,
fetched from a Hugging Face dataset repo. This module holds the single implementation of: locating the
CSV (hub download or `--source-dir`), reading and checking its rows, the seeded random choices (subsets),
and, for the generators, writing such CSVs. Writing the built dataset is `dataset.common`'s job.
"""
from __future__ import annotations

import argparse
import csv
import os
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from dataset.output_dir import REPLACES_ONLY_OWN, OutputLayout, atomic_output_dir, check_replaceable
from utils.atomic import writing
from utils.cli import non_negative_int, positive_int, progress
from utils.errors import DatasetError

CSV_COLUMNS = ("source", "question", "answer", "rating")
CSV_ENTRIES = OutputLayout(files=frozenset({"train.csv", "test.csv"}))  # what a generator's output holds

# Independent random streams, one per purpose, all derived from `--seed`: changing e.g. the train
# subset size must not change which test puzzles are drawn or how the train set is augmented.
STREAM_TRAIN_SUBSET = 0
STREAM_TEST_SUBSET = 1
STREAM_AUGMENT = 2


class DatasetSourceError(DatasetError):
    """Bad input or an unreachable source; the message says what is wrong and how to fix it."""


@dataclass
class CsvRows:
    """The rows of one CSV file, in file order, as ASCII-code arrays (compact: 1 byte per cell)."""

    path: str
    questions: np.ndarray  # uint8 (N, seq_len), ASCII codes
    answers: np.ndarray  # uint8 (N, seq_len), ASCII codes
    ratings: np.ndarray  # int64 (N,)
    line_numbers: np.ndarray  # int64 (N,), 1-based physical line of each row, for messages

    def __len__(self) -> int:
        return self.questions.shape[0]

    def select(self, indices: np.ndarray) -> "CsvRows":
        """The rows at `indices` (in that order)."""
        return CsvRows(self.path, self.questions[indices], self.answers[indices], self.ratings[indices],
                       self.line_numbers[indices])


# ----------------------------------------------------------------------------------------------
# Locating the CSV files


def _network_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "the hub could not be reached / did not serve the file".

    huggingface_hub raises `LocalEntryNotFoundError` (an OSError) when offline, and HTTP errors as
    `HfHubHTTPError`; older releases may leak `requests` errors and newer ones `httpx` errors, so
    those are added when the library is installed. Anything else is a bug and must propagate.
    """
    errors: list[type[BaseException]] = [OSError]
    try:
        from huggingface_hub.errors import HfHubHTTPError
        errors.append(HfHubHTTPError)
    except ImportError:
        pass
    try:
        import requests
        errors.append(requests.exceptions.RequestException)
    except ImportError:
        pass
    try:
        import httpx
        errors.append(httpx.HTTPError)
    except ImportError:
        pass
    return tuple(errors)


def download_from_hub(source_repo: str, filename: str, generator_hint: str) -> str:
    """Download `filename` of the hub dataset `source_repo`; return its local (cached) path."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:
        raise DatasetSourceError(
            f"huggingface_hub is not installed, so {filename} of {source_repo!r} cannot be downloaded. "
            f"Install it (`pip install 'huggingface_hub>=0.20'`), or pass --source-dir DIR with local "
            f"train.csv/test.csv, e.g. generated offline by `{generator_hint}`."
        ) from e
    try:
        return hf_hub_download(repo_id=source_repo, filename=filename, repo_type="dataset")
    except _network_errors() as e:
        raise DatasetSourceError(
            f"could not download {filename} of the dataset repo {source_repo!r} from the Hugging Face hub "
            f"({type(e).__name__}: {e}). If this machine is offline, pass --source-dir DIR with local "
            f"train.csv/test.csv (same columns {','.join(CSV_COLUMNS)}), e.g. generated offline by "
            f"`{generator_hint}`."
        ) from e


def locate_csv(split: str, source_repo: str, source_dir: Optional[str], generator_hint: str) -> str:
    """Path of `<split>.csv`: from `source_dir` when given, else downloaded from `source_repo`."""
    filename = f"{split}.csv"
    if source_dir is None:
        return download_from_hub(source_repo, filename, generator_hint)
    path = os.path.join(source_dir, filename)
    if not os.path.isfile(path):
        raise DatasetSourceError(
            f"--source-dir {source_dir!r} has no {filename}; it must hold train.csv and test.csv with the "
            f"columns {','.join(CSV_COLUMNS)} (generate them with `{generator_hint}`)."
        )
    return path


# ----------------------------------------------------------------------------------------------
# Reading and checking rows


def row_error(path: str, line: int, problem: str) -> DatasetSourceError:
    """Error about one CSV row, naming file and line so the user can find and fix it."""
    return DatasetSourceError(f"{path}, line {line}: {problem}. Fix or remove that row.")


def _check_header(path: str, header: Optional[list[str]]) -> dict[str, int]:
    """Column positions, or an error if a required column is missing."""
    if header is None:
        raise DatasetSourceError(f"{path} is empty; expected a header line {','.join(CSV_COLUMNS)} and rows.")
    names = [h.strip() for h in header]
    missing = [c for c in CSV_COLUMNS if c not in names]
    if missing:
        raise row_error(path, 1, f"header {names} lacks the column(s) {missing} (expected {','.join(CSV_COLUMNS)})")
    return {c: names.index(c) for c in CSV_COLUMNS}


def _parse_rating(path: str, line: int, text: str) -> int:
    """Ratings are integer backtrack counts; accept "12" and "12.0", reject anything else."""
    try:
        value = float(text)
    except ValueError:
        raise row_error(path, line, f"rating {text!r} is not a number") from None
    if not value.is_integer():
        raise row_error(path, line, f"rating {text!r} is not a whole number")
    return int(value)


def read_csv_rows(path: str, seq_len: int, question_chars: str, answer_chars: str, desc: str) -> CsvRows:
    """Read every row; check the string lengths and characters (per-puzzle rules are the caller's).

    Strings are packed into byte buffers as they are read: the full Sudoku-Extreme train file has
    millions of rows, and Python string objects would take ~10x the memory.
    """
    question_bytes, answer_bytes = bytearray(), bytearray()
    ratings: list[int] = []
    lines: list[int] = []
    try:
        f = open(path, "r", newline="", encoding="utf-8")
    except OSError as e:
        raise DatasetSourceError(f"cannot open {path}: {e}") from e
    with f:
        reader = csv.reader(f)
        try:
            cols = _check_header(path, next(reader, None))
            for row in progress(reader, desc=desc, unit=" rows"):
                line = reader.line_num
                if not row:
                    continue  # a blank line carries no puzzle
                if len(row) < len(CSV_COLUMNS):
                    raise row_error(path, line,
                                    f"has {len(row)} fields, expected {len(CSV_COLUMNS)} ({','.join(CSV_COLUMNS)})")
                for name, buffer in (("question", question_bytes), ("answer", answer_bytes)):
                    text = row[cols[name]]
                    if len(text) != seq_len:
                        raise row_error(path, line, f"{name} has {len(text)} characters, expected {seq_len}")
                    try:
                        buffer += text.encode("ascii")
                    except UnicodeEncodeError:
                        raise row_error(path, line, f"{name} contains non-ASCII characters") from None
                ratings.append(_parse_rating(path, line, row[cols["rating"]].strip()))
                lines.append(line)
        except csv.Error as e:
            raise row_error(path, reader.line_num, f"is not valid CSV ({e})") from e
        except UnicodeDecodeError as e:
            raise DatasetSourceError(f"{path} is not UTF-8 text ({e}); expected a CSV file.") from e
    rows = CsvRows(
        path,
        np.frombuffer(bytes(question_bytes), dtype=np.uint8).reshape(-1, seq_len),
        np.frombuffer(bytes(answer_bytes), dtype=np.uint8).reshape(-1, seq_len),
        np.asarray(ratings, dtype=np.int64),
        np.asarray(lines, dtype=np.int64),
    )
    _check_charset(rows, rows.questions, "question", question_chars)
    _check_charset(rows, rows.answers, "answer", answer_chars)
    return rows


def _check_charset(rows: CsvRows, codes: np.ndarray, name: str, allowed_chars: str) -> None:
    """Error naming the first row whose `name` string has a character outside `allowed_chars`."""
    allowed = np.zeros(256, dtype=bool)
    allowed[np.frombuffer(allowed_chars.encode("ascii"), dtype=np.uint8)] = True
    bad_rows = np.flatnonzero(~allowed[codes].all(axis=1))
    if bad_rows.size:
        row = codes[bad_rows[0]]
        bad_chars = sorted({chr(c) for c in row[~allowed[row]]})
        raise row_error(rows.path, int(rows.line_numbers[bad_rows[0]]),
                        f"{name} contains {bad_chars}; allowed characters are {allowed_chars!r}")


def codes_to_values(codes: np.ndarray, charset: str, value_of: Optional[dict[str, int]] = None) -> np.ndarray:
    """Map ASCII codes to small integers: position in `charset`, or `value_of[char]` when given."""
    table = np.zeros(256, dtype=np.uint8)
    for i, ch in enumerate(charset):
        table[ord(ch)] = i if value_of is None else value_of[ch]
    return table[codes]


def first_bad_row(rows: CsvRows, bad: np.ndarray, problem: str) -> None:
    """Raise about the first row flagged in the boolean mask `bad`, if any."""
    flagged = np.flatnonzero(bad)
    if flagged.size:
        raise row_error(rows.path, int(rows.line_numbers[flagged[0]]), problem)


def load_checked_split(split: str, args: argparse.Namespace, seq_len: int, question_chars: str, answer_chars: str,
                       check: Callable[[CsvRows], object], generator_hint: str) -> CsvRows:
    """`<split>.csv` from the hub or `args.source_dir`, read and fully checked (`check` = the task's per-row rules)."""
    path = locate_csv(split, args.source_repo, args.source_dir, generator_hint)
    rows = read_csv_rows(path, seq_len, question_chars, answer_chars, desc=f"read {split}.csv")
    check_all_rows(rows, check, desc=f"check {split}.csv")
    return rows


CHECK_CHUNK = 65536  # rows per vectorised check: bounds the temporaries on multi-million-row files


def check_all_rows(rows: CsvRows, check: Callable[[CsvRows], object], desc: str) -> None:
    """Run the per-puzzle `check` over every row in chunks, before any filtering or subsetting,
    so a malformed file is reported whatever options select from it."""
    for start in progress(range(0, len(rows), CHECK_CHUNK), desc=desc, unit=" chunks"):
        check(rows.select(slice(start, start + CHECK_CHUNK)))


# ----------------------------------------------------------------------------------------------
# Seeded selection


def stream_rng(seed: int, stream: int) -> np.random.Generator:
    """The generator of one purpose (STREAM_*) under `--seed`."""
    return np.random.default_rng([seed, stream])


def filter_min_rating(rows: CsvRows, min_rating: Optional[int]) -> CsvRows:
    """Keep rows with rating >= min_rating (all rows when None)."""
    if min_rating is None:
        return rows
    return rows.select(np.flatnonzero(rows.ratings >= min_rating))


def random_subset(rows: CsvRows, size: Optional[int], rng: np.random.Generator, what: str) -> CsvRows:
    """A random subset of `size` rows (kept in file order), or all rows when size is None or too big."""
    if size is None:
        return rows
    if size >= len(rows):
        print(f"Note: {what} has only {len(rows)} puzzles, fewer than the subset size {size}; keeping all of them.")
        return rows
    return rows.select(np.sort(rng.choice(len(rows), size=size, replace=False)))


def require_rows(rows: CsvRows, what: str, hint: str) -> None:
    if len(rows) == 0:
        raise DatasetSourceError(f"{what} has no puzzles left ({rows.path}); {hint}.")


# ----------------------------------------------------------------------------------------------
# Command line


def add_source_arguments(parser: argparse.ArgumentParser, default_repo: str, default_output: str) -> None:
    """Options common to both CSV builders (their one home: each builder adds only its own)."""
    parser.add_argument("--source-repo", default=default_repo,
                        help="Hugging Face dataset repo train.csv/test.csv are downloaded from")
    parser.add_argument("--source-dir", default=None,
                        help="read train.csv/test.csv from this directory instead (default: download them from "
                             "--source-repo)")
    parser.add_argument("--output-dir", default=default_output,
                        help=f"directory the dataset is written to; {REPLACES_ONLY_OWN}")
    parser.add_argument("--subsample-size", type=positive_int, default=None,
                        help="train only: keep a random subset of this many puzzles (default: all of them)")
    parser.add_argument("--test-subsample-size", type=positive_int, default=None,
                        help="keep a random subset of this many test puzzles (default: all of them)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of every random choice: subsets, augmentations")


def add_generator_arguments(parser: argparse.ArgumentParser, default_output: str, num_train: int, num_test: int,
                            unit: str) -> None:
    """Options common to both offline generators (`unit`: what they make, e.g. "puzzles")."""
    parser.add_argument("--output-dir", default=default_output,
                        help=f"directory train.csv and test.csv are written to; {REPLACES_ONLY_OWN}")
    parser.add_argument("--num-train", type=non_negative_int, default=num_train, help=f"train {unit} to generate")
    parser.add_argument("--num-test", type=non_negative_int, default=num_test,
                        help=f"test {unit} to generate (all distinct from the train {unit})")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of every random choice: the same seed gives identical files")


# ----------------------------------------------------------------------------------------------
# Offline generators


def write_csv(path: str, rows: list[tuple[str, str, str, int]]) -> None:
    """Write `source,question,answer,rating` rows (the layout `read_csv_rows` reads)."""
    with writing(path), open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerows(rows)


def optional_njit(fn):
    """numba's `njit(cache=True)` when numba is installed, else the plain Python function.

    The generators' solvers are written in the subset of Python that numba compiles, so without
    numba the very same code runs (correct, only much slower).
    """
    try:
        from numba import njit
    except ImportError:
        return fn
    return njit(cache=True)(fn)


def generate_unique_rows(count: int, make: Callable[[], Optional[tuple[np.ndarray, np.ndarray, int]]],
                         encode: Callable[[np.ndarray], str], seen: set[str], desc: str, unit: str, max_attempts: int,
                         hint: str, min_rating: int = 0) -> list[tuple[str, str, str, int]]:
    """`count` CSV rows `("generated", question, answer, rating)`, none whose question is in `seen`.

    `make()` gives (question, answer, rating) or None (rejected by the generator's own filter); rows rated
    below `min_rating` are rejected too, and `encode` writes a grid as its CSV string. `seen` is updated,
    so calling this for train then test keeps the splits disjoint and free of repeats.
    """
    rows: list[tuple[str, str, str, int]] = []
    attempts = 0
    with progress(total=count, desc=desc, unit=f" {unit}") as bar:
        while len(rows) < count:
            attempts += 1
            if attempts > max_attempts:
                raise DatasetSourceError(f"only {len(rows)} of {count} {desc} {unit} passed the filters after "
                                         f"{attempts - 1} attempts; {hint}.")
            made = make()
            if made is None or made[2] < min_rating:
                continue
            question, answer, rating = made
            row = ("generated", encode(question), encode(answer), rating)
            if row[1] in seen:
                continue
            seen.add(row[1])
            rows.append(row)
            bar.update(1)
    return rows


def write_generated_csvs(output_dir: str, num_train: int, num_test: int,
                         generate_rows: Callable[[int, set[str], str], list], unit: str, announce: bool = True) -> None:
    """train.csv then test.csv from `generate_rows(count, seen, desc)`, sharing `seen` so the splits are disjoint.

    `announce=False` for CSVs in a temporary folder that a builder reads and deletes: naming it would point
    the user at a path that is gone."""
    check_replaceable(output_dir, CSV_ENTRIES)  # refuse before generating
    seen: set[str] = set()
    train = generate_rows(num_train, seen, "train")
    test = generate_rows(num_test, seen, "test")
    with atomic_output_dir(output_dir, CSV_ENTRIES) as tmp:
        write_csv(os.path.join(tmp, "train.csv"), train)
        write_csv(os.path.join(tmp, "test.csv"), test)
    if announce:
        print(f"Wrote {output_dir}: {len(train)} train and {len(test)} test {unit}.")
