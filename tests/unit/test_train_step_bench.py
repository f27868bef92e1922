"""benchmarks/train_step.py --compare and --profile (benchmarks/step_compare.py, benchmarks/step_profile.py): the
table lists every chosen path with its ratio to fp32 eager, the JSON holds the same, the shapes are the demo's
and the paper's Sudoku model unless options are given, and the profile puts each operator in its group.
Tiny models, one eager step per path, no torch.compile: seconds."""
import json
import os
import re

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.profiler import record_function

from benchmarks import step_compare, step_profile, train_step
from benchmarks.step_compare import SHAPES
from benchmarks.step_profile import DATA_RANGE, GROUPS, LOSS_RANGE, OPTIMIZER_RANGE
from models.recursive_reasoning.trm import TRMConfig
from tests.helpers import REPO_ROOT

# The demo shape made tiny by options given on the command line (which replace the shape's values).
TINY_DEMO = ["--compare", "--shapes", "demo", "--hidden-size", "16", "--batch-size", "4", "--steps", "1",
             "--warmup", "0", "--device", "cpu", "--json"]


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def table_rows(out: str) -> dict[str, list[str]]:
    """path label -> the table row's cells after shape and label ('ms/step', 'samples/s', 'ratio')."""
    rows = {}
    for line in out.splitlines():
        match = re.fullmatch(r"demo\s+(\w+ (?:eager|compiled))\s+(\S+)\s+(\S+)\s+(\S+)", line)
        if match:
            rows[match.group(1)] = list(match.groups()[1:])
    return rows


def test_compare_lists_every_chosen_path_with_its_ratio(capsys):
    returned = train_step.main(TINY_DEMO + ["--paths", "fp32,bf16"])
    out = capsys.readouterr().out
    assert re.search(r"^bf16 units: \S", out, flags=re.M)
    rows = table_rows(out)
    assert list(rows) == ["fp32 eager", "bf16 eager"]
    assert rows["fp32 eager"][2] == "1.00x"
    assert re.fullmatch(r"\d+\.\d\dx", rows["bf16 eager"][2])

    document = last_json(out)
    assert document == json.loads(json.dumps(returned))
    results = {row["path"]: row for row in document["results"]}
    assert list(results) == ["fp32", "bf16"]
    assert [results[p]["dtype"] for p in results] == ["float32", "bfloat16"]
    assert not any(row["compile"] for row in results.values())
    assert results["fp32"]["vs_fp32"] == 1.0
    assert results["bf16"]["vs_fp32"] == pytest.approx(results["fp32"]["mean_s"] / results["bf16"]["mean_s"])
    assert f"{results['bf16']['vs_fp32']:.2f}x" == rows["bf16 eager"][2]
    for row in results.values():  # the options given replace the shape's values; the others are the demo's
        assert (row["shape"], row["hidden_size"], row["batch_size"]) == ("demo", 16, 4)
        assert (row["num_heads"], row["H_cycles"], row["L_cycles"], row["halt_max_steps"]) == (2, 2, 2, 4)
        assert (row["mlp_t"], row["pos_encodings"], row["prefix_len"], row["steps"]) == (True, "none", 0, 1)
        assert "profile" not in row


def test_the_ratio_is_left_blank_without_an_fp32_path(capsys):
    rows = [dict(train_step.parse_args([], SHAPES["demo"]).__dict__, shape="demo", path=path, prefix_len=0,
                 mean_s=mean, samples_per_s=64 / mean) for path, mean in (("bf16", 0.5), ("bf16+compile", 0.25))]
    step_compare.add_speedups(rows)
    assert [row["vs_fp32"] for row in rows] == [None, None]
    step_compare.print_table(rows, ["header"])
    assert [cells[2] for cells in table_rows(capsys.readouterr().out).values()] == ["-", "-"]
    rows.append(dict(rows[0], path="fp32", mean_s=1.0))
    step_compare.add_speedups(rows)
    assert [row["vs_fp32"] for row in rows] == [2.0, 4.0, 1.0]


@pytest.mark.parametrize("unit, line", [("AMX-BF16", "bf16 units: AMX-BF16"),
                                        (None, "bf16 units: none (bf16 runs without them)")])
def test_the_header_names_the_cpus_bf16_unit(monkeypatch, unit, line):
    monkeypatch.setattr(step_compare, "bf16_units", lambda: unit)
    assert step_compare.bf16_line(torch.device("cpu")) == line


def test_the_demo_shape_is_the_quick_demos_model():
    quickstart = OmegaConf.load(os.path.join(REPO_ROOT, "config", "quickstart.yaml"))
    demo = dict(SHAPES["demo"])
    assert demo.pop("batch_size") == quickstart.global_batch_size
    assert (demo.pop("seq_len"), demo.pop("vocab_size")) == (81, 11)  # its generated Sudoku dataset
    assert demo == {key: value for key, value in quickstart.arch.items() if key != "forward_dtype"}


def test_the_sudoku_shape_and_options_given_over_it():
    args = train_step.parse_args([], SHAPES["sudoku"])
    config = TRMConfig(**train_step.model_config(args))
    assert (config.hidden_size, config.num_heads, config.H_cycles, config.L_cycles, config.halt_max_steps) == \
        (512, 8, 3, 6, 16)
    assert (config.mlp_t, config.pos_encodings, config.batch_size, config.prefix_len, config.total_len) == \
        (True, "none", 32, 16, 97)
    given = train_step.parse_args(["--hidden-size", "128", "--L-cycles", "2"], SHAPES["sudoku"])
    assert (given.hidden_size, given.puzzle_emb_ndim, given.L_cycles, given.H_cycles) == (128, 128, 2, 3)


@pytest.mark.parametrize("argv, message", [
    (["--compare", "--dtype", "bfloat16"], "leave out --dtype and --compile"),
    (["--compare", "--no-compile"], "leave out --dtype and --compile"),
    (["--compare", "--paths", "fp32,fp16"], "--paths: unknown or no names ['fp16']"),
    (["--compare", "--shapes", "arc"], "--shapes: unknown or no names ['arc']"),
])
def test_compare_rejects_what_it_cannot_run(capsys, argv, message):
    with pytest.raises(SystemExit):
        train_step.parse_args(argv)
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("name, group", [
    ("aten::mm", "matmul"), ("aten::addmm", "matmul"), ("aten::bmm", "matmul"), ("aten::linear", "matmul"),
    ("mkldnn::_linear_pointwise", "matmul"), ("aten::_scaled_dot_product_flash_attention_for_cpu", "matmul"),
    ("aten::add_", "elementwise"), ("aten::_to_copy", "elementwise"), ("aten::silu_backward", "elementwise"),
    ("aten::copy_", "elementwise"), ("aten::_foreach_mul_", "elementwise"), ("aten::rsqrt", "elementwise"),
    ("aten::sum", "other"), ("aten::view", "other"), ("aten::mean", "other"), ("aten::index_select", "other"),
])
def test_operators_are_grouped_by_name(name, group):
    assert step_profile.group_by_name(name) == group


def test_the_profile_groups_by_range_and_follows_the_loss_into_backward(monkeypatch):
    monkeypatch.setattr(step_profile, "TOP_OPS", 1000)  # every (operator, group)
    model = nn.Linear(8, 8)

    def step():
        with record_function(DATA_RANGE):
            x = torch.randn(4, 8)
        with record_function(LOSS_RANGE):
            loss = torch.log(model(x).sigmoid()).sum()
        loss.backward()
        with record_function(OPTIMIZER_RANGE):
            model.weight.grad.zero_()

    summary = step_profile.profile_steps(step, model, steps=2, cuda=False)
    found = {(op["name"], op["group"]) for op in summary["top"]}
    assert {("aten::addmm", "matmul"), ("aten::sigmoid", "loss"), ("aten::log", "loss"),
            ("aten::sigmoid_backward", "loss"), ("aten::zero_", "optimizer")} <= found
    assert ("aten::mm", "matmul") in found  # the model's backward, outside the loss
    assert not any(name == "aten::sigmoid_backward" and group != "loss" for name, group in found)
    assert any(group == "data" for _, group in found)
    assert sum(g["share"] for g in summary["groups"].values()) == pytest.approx(1.0)


def check_profile(profile: dict, steps: int) -> None:
    assert list(profile["groups"]) == list(GROUPS)
    assert sum(group["share"] for group in profile["groups"].values()) == pytest.approx(1.0)
    for name in ("matmul", "elementwise", "loss", "optimizer", "data"):
        assert profile["groups"][name]["cpu_ms"] > 0, name
    assert 0 < len(profile["top"]) <= step_profile.TOP_OPS and profile["steps"] == steps


def test_compare_profile_prints_the_groups_per_shape_and_dtype(capsys):
    document = train_step.main(TINY_DEMO + ["--paths", "fp32,bf16", "--profile"])
    out = capsys.readouterr().out
    for dtype in ("float32", "bfloat16"):
        section = out.split(f"profile of demo, {dtype} eager:")[1].split("profile of")[0]
        for name in GROUPS:
            assert re.search(rf"^  {name}\s+\d+\.\d\d\s+\d+\.\d%$", section, flags=re.M), (name, section)
        assert "top " in section and "operators by self CPU time" in section
    for row in document["results"]:
        check_profile(row["profile"], steps=1)
    assert last_json(out)["results"][1]["profile"]["groups"].keys() == set(GROUPS)


def test_single_configuration_profile(capsys):
    results = train_step.main(["--hidden-size", "16", "--num-heads", "2", "--mlp-t", "--pos-encodings", "none",
                               "--H-cycles", "1", "--L-cycles", "1", "--halt-max-steps", "2", "--batch-size", "4",
                               "--steps", "2", "--warmup", "0", "--device", "cpu", "--profile"])
    out = capsys.readouterr().out
    assert out.startswith("device:") and "throughput:" in out and "profile of float32 eager: 2 step(s)" in out
    check_profile(results["profile"], steps=2)  # the puzzle embedding's sign-SGD is in the optimizer group
