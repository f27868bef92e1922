"""TTA in evaluation: the published metrics stay as they are beside the TTA ones, and evaluate.py tta=K under
torchrun reports what one process does."""
import pytest
import torch

from dataset.common import load_metadata
from dataset.generated import build_generated_dataset
from tests.helpers import TINY_EVAL_ARCH, build_head, compose_config, evaluate_head, train_metadata
from tests.unit import test_tta as tta_tests
from training.config import parse_config
from training.tta import TTA_METRIC, tta_transforms

maze_set = tta_tests.maze_set  # the unit module's fixture, by name


def tiny_config(data: str, *extra: str):
    return parse_config(compose_config([f"data_paths=[{data}]", *TINY_EVAL_ARCH, "global_batch_size=8", "epochs=1",
                                        "eval_interval=1", "evaluators=[]", *extra]))


def test_evaluation_reports_tta_and_leaves_the_published_metrics_unchanged(tmp_path, maze_set):
    sudoku_set = build_generated_dataset(str(tmp_path / "sudoku"), "sudoku", num_train=8, num_test=10, seed=0,
                                         blanks=30)
    from tests.helpers import cpu_context
    from training.data import create_dataloader
    from training.evaluation import evaluate
    for data in (sudoku_set, maze_set):
        config = tiny_config(data)
        torch.manual_seed(0)
        head = build_head(config, train_metadata(config))
        plain, _ = evaluate_head(config, head)
        loader, metadata = create_dataloader([data], "test", cpu_context(), seed=0, global_batch_size=8)
        meta = load_metadata(data, "test")
        transforms = tta_transforms(meta.vocab_size, meta.seq_len, 3, seed=0)
        voted = evaluate(head, loader, metadata, [], cpu_context(), 0, None, tta=transforms)
        for name, metrics in plain.items():
            assert {k: v for k, v in voted[name].items() if k != TTA_METRIC} == metrics
            assert 0 <= voted[name][TTA_METRIC] <= 1


@pytest.mark.slow
def test_evaluate_tta_under_torchrun_matches_one_process(tmp_path):
    import json
    import os
    import subprocess
    import sys

    import evaluate as evaluate_cli
    from tests.helpers import REPO_ROOT, cpu_context
    from training.loop import train
    data = build_generated_dataset(str(tmp_path / "sudoku"), "sudoku", num_train=16, num_test=12, seed=0, blanks=30)
    run_dir = tmp_path / "run"
    train(parse_config(compose_config([f"data_paths=[{data}]", *TINY_EVAL_ARCH, "global_batch_size=8", "epochs=2",
                                       "eval_interval=2", "evaluators=[]", "num_workers=0", "wandb_mode=disabled",
                                       f"+checkpoint_path={run_dir}"])), cpu_context())
    args = [f"checkpoint={run_dir}", "tta=3", "tta_sudoku_check=true", "halt_early=true", "device=cpu"]
    one = evaluate_cli.run(evaluate_cli.parse_args([*args, f"output_dir={tmp_path / 'one'}", "num_workers=0"]),
                           cpu_context())
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             os.path.join(REPO_ROOT, "evaluate.py"), *args, f"output_dir={tmp_path / 'two'}"],
                            cwd=REPO_ROOT, env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO_ROOT),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "two" / "metrics.json") as f:
        two = json.load(f)
    assert {"all/tta_exact_accuracy", "all/tta_valid_exact_accuracy"} <= one.keys()
    for key, value in one.items():
        assert two[key] == pytest.approx(value, abs=1e-6), key
    assert "TTA exact accuracy" in result.stdout
