"""The run directory: what a training run writes and what evaluation reads back (docs/training.md).

- `layout`: every file and directory name of a run directory, with the functions that build and parse them;
- `states`: reading checkpoint files safely; writing, reading and pruning the resumable training state;
- `lock`: one run per run directory (`run.lock`);
- `metrics`: the local metrics.jsonl, mirrored to Weights & Biases;
- `hub`: published checkpoints on the Hugging Face hub (`hf://...`).
"""
