"""Training and evaluation of the recursive reasoning models (docs/training.md).

- `loop.train(config, ctx)`: the whole run (`pretrain.py` calls it);
- `config`: the typed training config (`parse_config`) and the help of `pretrain.py`;
- `state`: the optimizers, `TrainState` and the LR schedule;
- `trained`: from a checkpoint (file, run directory, hf://) to a runnable model (evaluate, predict, kaggle.adapt,
  fine-tuning);
- `data`: loaders for the configured dataset paths;
- `evaluation`: the ACT evaluation loop and evaluators, shared by training and `evaluate.py`;
- `checkpointing`: weight files, resumable training states, the run directory;
- `carry`: the ACT carry as a training state saves it;
- `tta`, `best`: test-time augmentation voting; the best checkpoint;
- `signals`: stopping cleanly on SIGTERM/SIGINT;
- `report`: what is printed and drawn at the end of a run.
"""
