"""The GPU check of benchmarks/gpu_check.py by job: the FLOP model, the benchmark shapes, the workers' result
line, the three workers (adam, nccl, bench) and the orchestrator that runs the steps."""
