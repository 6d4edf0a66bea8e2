"""Training service: LoRA runs with checkpoints, sample grids, evaluation, exact resume, a run
registry, and runs executed in process or as Kubernetes Jobs."""
