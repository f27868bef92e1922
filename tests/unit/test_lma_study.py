"""benchmarks/lma_study.py without training: the LMA variants it picks are valid, the table reads the
curves right, and files it did not write are not replaced."""
import itertools
import json

import numpy as np
import pytest
import torch

from benchmarks import equal_time, lma_study, study_report, train_step
from benchmarks.study_tasks import build_task
from models.lma_layout import is_clean, valid_latent_lens
from models.recursive_reasoning.trm import TRMConfig
from utils.errors import ConfigError


def tasks():
    return {name: build_task(name, 8, 4, (45, 55)) for name in ("arc", "maze", "sudoku")}


@pytest.mark.parametrize("hidden", [64, 128])
def test_default_variants_are_valid_distinct_models_of_both_widths(hidden):
    args = lma_study.parse_args(["--hidden-size", str(hidden)])
    for name, task in tasks().items():
        configs = lma_study.variants(args, task)
        length = TRMConfig(**configs["plain"]).total_len
        assert length == (97 if name == "sudoku" else 916)
        # plain + clean at L/8 and L/16 + unclean at 229 (the lengths only unclean accepts are multiples of 229;
        # Sudoku's only one, 97, is no compression), each at d' = hidden and 2 hidden
        assert len(configs) == (1 + 2 * 2 if name == "sudoku" else 1 + 3 * 2)
        models = set()
        for variant, config in configs.items():
            if variant == "plain":
                assert "lma_enable" not in config
                continue
            mode, latent_len = config["lma_mode"], config["lma_latent_len"]
            assert latent_len in valid_latent_lens(length, hidden, mode) and latent_len <= length
            assert is_clean(latent_len, length, hidden) == (mode == "clean")  # an unclean variant is no clean one
            assert config["lma_latent_dim"] in (hidden, 2 * hidden)
            assert TRMConfig(**config).lma_layout.latent.length == latent_len  # the model accepts it
            models.add((latent_len, config["lma_latent_dim"]))
        assert len(models) == len(configs) - 1


def test_latent_lens_are_picked_nearest_the_targets_without_repeats_or_far_ones():
    clean = lma_study.latent_lens_of("clean", 916, 64)
    assert lma_study.pick_latent_lens(clean, 916, [8, 16]) == [128, 64]
    assert lma_study.pick_latent_lens(lma_study.latent_lens_of("unclean", 916, 64), 916, [8, 16]) == [229]
    assert lma_study.pick_latent_lens(lma_study.latent_lens_of("clean", 97, 64), 97, [8, 16]) == [16, 8]
    assert lma_study.pick_latent_lens(clean, 916, [8, 8.1]) == [128, 64]  # the second takes the next nearest


def test_an_invalid_explicit_latent_len_is_named_with_the_task():
    args = lma_study.parse_args(["--latent-lens", "100", "--variants", "clean"])
    with pytest.raises(ConfigError, match=r"--latent-lens, task arc: lma_latent_len \(100\) is not valid"):
        lma_study.variants(args, tasks()["arc"])


def test_variants_select_by_family_or_name():
    args = lma_study.parse_args(["--variants", "plain,clean-L128-d128"])
    assert list(lma_study.variants(args, tasks()["arc"])) == ["plain", "clean-L128-d128"]
    args = lma_study.parse_args(["--latent-lens", "229,128", "--latent-dims", "1"])  # each in its narrowest family
    assert list(lma_study.variants(args, tasks()["arc"])) == ["plain", "unclean-L229-d64", "clean-L128-d64"]
    with pytest.raises(ConfigError, match="selects nothing"):
        lma_study.variants(lma_study.parse_args(["--variants", "fast"]), tasks()["arc"])


def curve(*points):
    return {"steps": 10, "points": [{"train_s": t, "exact_accuracy": e, "token_accuracy": k} for t, e, k in points]}


def test_the_table_compares_the_best_lma_with_plain_both_ways():
    task = {"positions": 916, "variants": {
        "plain": curve((0, 0, 0.1), (10, 0.2, 0.5), (20, 0.4, 0.6)),
        "unclean-L128-d64": curve((0, 0, 0.1), (10, 0.5, 0.7), (20, 0.6, 0.8)),
        "clean-L64-d64": curve((0, 0, 0.1), (10, 0.1, 0.2), (20, 0.3, 0.4))}}
    row = study_report.task_row("arc", task)
    assert row["best_lma"] == "unclean-L128-d64" and row["compared_on"] == "exact_accuracy"
    assert row["lma_s_to_plain_final"] == 10 and row["plain_s_to_lma_final"] is None  # never within the budget


def test_without_any_exact_answer_the_table_compares_token_accuracy():
    task = {"positions": 97, "variants": {"plain": curve((0, 0, 0.1), (5, 0, 0.3)),
                                          "clean-L16-d64": curve((0, 0, 0.1), (5, 0, 0.2))}}
    row = study_report.task_row("sudoku", task)
    assert row["compared_on"] == "token_accuracy" and row["plain_s_to_lma_final"] == 5


def test_files_it_did_not_write_are_not_replaced(tmp_path):
    (tmp_path / "lma_study.json").write_text(json.dumps({"something": "else"}))
    with pytest.raises(ConfigError, match="was not written by lma_study.py"):
        lma_study.check_out_dir(str(tmp_path))
    (tmp_path / "lma_study.json").write_text(json.dumps({"kind": "lma_study"}))
    assert lma_study.check_out_dir(str(tmp_path))[0] == str(tmp_path / "lma_study.json")


def test_the_budget_counts_training_steps_only_and_points_fall_at_regular_times(monkeypatch):
    ticks = itertools.count()
    monkeypatch.setattr(equal_time, "training_clock", lambda device: lambda: float(next(ticks)))  # 1 s a step
    task = tasks()["sudoku"]
    args = lma_study.parse_args(["--smoke"])
    torch.manual_seed(0)
    head = train_step.build_head(lma_study.base_config(args, task), torch.device("cpu"))
    rng = np.random.default_rng(0)
    points = []
    steps = equal_time.train_for(5, head, equal_time.build_optimizers(head, puzzle_emb=True),
                                 lambda: task.batch(2, rng, torch.device("cpu")), 2, torch.device("cpu"), every=2,
                                 at_point=lambda trained, n: points.append((trained, n)))
    assert steps == 5 and points == [(0.0, 0), (2.0, 2), (4.0, 4), (5.0, 5)]


def test_lma_options_add_a_variant_per_set_with_its_keys_on():
    args = lma_study.parse_args(["--variants", "plain,clean-L128-d64", "--lma-options", "skip,skip+skip"])
    assert args.lma_options == [("skip",)]  # a set names an option once, and equal sets are one
    configs = lma_study.variants(args, tasks()["arc"])
    assert list(configs) == ["plain", "clean-L128-d64"]  # a name selects only itself
    args = lma_study.parse_args(["--variants", "plain,clean", "--latent-dims", "1", "--lma-options", "skip"])
    configs = lma_study.variants(args, tasks()["arc"])
    assert list(configs) == ["plain", "clean-L128-d64", "clean-L128-d64+skip", "clean-L64-d64", "clean-L64-d64+skip"]
    assert "lma_skip" not in configs["plain"] and "lma_skip" not in configs["clean-L64-d64"]
    assert configs["clean-L64-d64+skip"] == dict(configs["clean-L64-d64"], lma_skip=True)
    assert "options skip" in lma_study.settings(configs["clean-L64-d64+skip"])
    assert "options" not in lma_study.settings(configs["clean-L64-d64"])
    for config in configs.values():
        TRMConfig(**config)  # the model accepts each


def test_a_variant_name_with_options_selects_that_variant_alone():
    args = lma_study.parse_args(["--variants", "clean-L128-d64+skip"])
    assert args.lma_options == [("skip",)]
    assert list(lma_study.variants(args, tasks()["arc"])) == ["clean-L128-d64+skip"]


@pytest.mark.parametrize("argv, message", [
    (["--lma-options", "skipp"], "unknown LMA option(s) 'skipp' in 'skipp'"),
    (["--variants", "clean-L128-d64+fast"], "unknown LMA option(s) 'fast' in 'fast'"),
    (["--lma-options", "skip+"], "unknown LMA option(s) '' in 'skip+'"),
    # the removed option is an unknown name like any other, and the message lists what is left
    (["--lma-options", "skip,chunk_pos"], "unknown LMA option(s) 'chunk_pos' in 'chunk_pos'; choose from skip, "
                                          "joined by '+'"),
    (["--variants", "clean-L128-d64+skip+chunk_pos"], "unknown LMA option(s) 'chunk_pos' in 'skip+chunk_pos'"),
    (["--autoencode", "-1"], "--autoencode must be >= 0, got -1")])
def test_bad_lma_options_are_rejected(argv, message, capsys):
    with pytest.raises(SystemExit):
        lma_study.parse_args(argv)
    assert message in capsys.readouterr().err


def test_autoencode_mode_reports_recovery_without_writing_files(tmp_path, capsys):
    out = tmp_path / "study"
    document = lma_study.run_study(lma_study.parse_args(
        ["--smoke", "--tasks", "sudoku", "--variants", "clean", "--autoencode", "2", "--lma-options", "skip",
         "--out", str(out)]))
    results = document["tasks"]["sudoku"]
    assert list(results) == ["clean-L16-d16", "clean-L16-d16+skip"]
    for figures in results.values():
        assert 0 <= figures["token_acc"] <= 1 and figures["rel_err"] >= 0 and 0 < figures["majority"] <= 1
    assert not out.exists()
    assert "token_acc" in capsys.readouterr().out
