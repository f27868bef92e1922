"""The table and the picture of benchmarks/lma_study.py, from its JSON document alone.

Per task: plain TRM against the best LMA variant (highest final held-out exact accuracy, then token
accuracy) at the end of the equal budget, and the training time each needed to first reach the other's
final accuracy. The comparison is on exact accuracy, or on token accuracy where neither reached any
exact accuracy (the JSON says which).
"""
from typing import Optional

from viz.png import agg_figure, save_figure

METRICS = (("exact_accuracy", "held-out exact accuracy"), ("token_accuracy", "held-out token accuracy"))
PLAIN = "plain"


def final(variant: dict) -> dict:
    return variant["points"][-1]


def time_to_reach(variant: dict, metric: str, target: float) -> Optional[float]:
    """Training seconds at the first evaluated point with `metric` >= target (None: never within the budget)."""
    for point in variant["points"]:
        if point[metric] >= target:
            return point["train_s"]
    return None


def task_row(name: str, task: dict) -> Optional[dict]:
    """The table row of one task, or None without plain TRM or without an LMA variant."""
    variants = task["variants"]
    lma = {k: v for k, v in variants.items() if k != PLAIN}
    if PLAIN not in variants or not lma:
        return None
    best = max(lma, key=lambda k: (final(lma[k])["exact_accuracy"], final(lma[k])["token_accuracy"]))
    plain, other = variants[PLAIN], lma[best]
    exact_zero = final(plain)["exact_accuracy"] == 0 and final(other)["exact_accuracy"] == 0
    metric = "token_accuracy" if exact_zero else "exact_accuracy"
    return {
        "task": name, "positions": task["positions"], "best_lma": best, "compared_on": metric,
        "plain_exact": final(plain)["exact_accuracy"], "plain_token": final(plain)["token_accuracy"],
        "lma_exact": final(other)["exact_accuracy"], "lma_token": final(other)["token_accuracy"],
        "plain_steps": plain["steps"], "lma_steps": other["steps"],
        "plain_s_to_lma_final": time_to_reach(plain, metric, final(other)[metric]),
        "lma_s_to_plain_final": time_to_reach(other, metric, final(plain)[metric]),
    }


def table(document: dict) -> list[dict]:
    rows = (task_row(name, task) for name, task in document["tasks"].items())
    return [row for row in rows if row is not None]


def _seconds(value: Optional[float], budget: float) -> str:
    return f"> {budget:g}" if value is None else f"{value:.0f}"


def print_table(document: dict) -> None:
    budget = document["options"]["budget"]
    print(f"\nheld-out accuracy after {budget:g} s of training each ({document['clock']}, {document['device']}):")
    header = (f"{'task':<7} {'pos':>4}  {'plain exact':>11} {'token':>6} {'steps':>6}  {'best LMA':<18} "
              f"{'exact':>6} {'token':>6} {'steps':>6}  {'plain s to LMA final':>20} {'LMA s to plain final':>20}")
    print(header)
    for row in document.get("table", []):
        on = "" if row["compared_on"] == "exact_accuracy" else " (token)"
        print(f"{row['task']:<7} {row['positions']:>4}  {row['plain_exact']:>11.3f} {row['plain_token']:>6.3f} "
              f"{row['plain_steps']:>6}  {row['best_lma']:<18} {row['lma_exact']:>6.3f} {row['lma_token']:>6.3f} "
              f"{row['lma_steps']:>6}  {_seconds(row['plain_s_to_lma_final'], budget) + on:>20} "
              f"{_seconds(row['lma_s_to_plain_final'], budget) + on:>20}")
    for name, task in document["tasks"].items():
        print(f"\n{name} ({task['description']}, {task['positions']} positions):")
        for variant, result in task["variants"].items():
            last = final(result)
            print(f"  {variant:<18} exact {last['exact_accuracy']:.3f}  token {last['token_accuracy']:.3f}  "
                  f"{result['steps']:>6} steps  {result['parameters']:>9,} parameters  {result['settings']}")


def _style(name: str) -> dict:
    if name == PLAIN:
        return {"color": "black", "linewidth": 2.2, "linestyle": "-"}
    return {"linewidth": 1.3, "linestyle": "--" if name.startswith("clean") else "-"}


def write_picture(document: dict, path: str) -> str:
    """Accuracy vs training time: a column per task, a row per metric, a line per variant (legend in the top row)."""
    tasks = document["tasks"]
    fig = agg_figure(figsize=(4.2 * max(len(tasks), 1), 6.6))
    axes = fig.subplots(len(METRICS), max(len(tasks), 1), squeeze=False)
    for column, (name, task) in enumerate(tasks.items()):
        for row, (metric, label) in enumerate(METRICS):
            ax = axes[row][column]
            for variant, result in task["variants"].items():
                points = result["points"]
                ax.plot([p["train_s"] for p in points], [p[metric] for p in points], marker="o", markersize=3,
                        label=variant, **_style(variant))
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel(f"training time (s, {document['clock']})", fontsize=7)
            ax.set_ylabel(label, fontsize=8)
            ax.set_title(f"{name}: {task['positions']} positions", fontsize=9)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        axes[0][column].legend(fontsize=6, loc="upper left", framealpha=0.8)  # the names differ per task
    fig.suptitle(f"plain TRM vs TRM+LMA at equal training time ({document['device']})", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return save_figure(fig, path)
