"""Entry point of a Kubernetes Job pod: `python -m likeness.training.job --run-id ID`.

Reads the same LIKENESS_* settings as the service (store, model repository, registry URL from
the Secret), trains the run recorded in the registry and exits 0 when the run ended as recorded
(succeeded, cancelled or failed with its reason). SIGTERM (node drain, preemption) stops the loop
at its next step, saves the training state and exits 143, so the Job's retry resumes exactly
there; a crash also exits non-zero and the retry resumes from the newest saved state.

Under `torchrun` (a run with several GPUs or nodes) each process is one rank: all train, rank 0
writes; a lost rank makes every rank exit non-zero, and the retry resumes from the last checkpoint.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from likeness.core import tracing
from likeness.core.logging import configure
from likeness.training.app import apply_torch_threads, create_context
from likeness.training.distributed import join, leave
from likeness.training.runner import execute
from likeness.training.settings import TrainingSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-id", required=True)
    args = parser.parse_args(argv)
    settings = TrainingSettings()
    configure("training-job", settings.log_level, settings.log_json)
    tracing.configure("training-job", settings)
    apply_torch_threads(settings)
    ranks = join(settings.training_distributed_backend)  # one process per device under torchrun
    ctx = create_context(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        # under the TRACEPARENT the training service put into the Job: one trace from StartRun to here
        with tracing.start_from_environment("training run", {"run.id": args.run_id}):
            state = execute(ctx, args.run_id, cancel=stop, ranks=ranks)
    finally:
        ctx.registry.close()
        leave(ranks)
        tracing.flush()
    print(f"run {args.run_id}: {state}", file=sys.stderr)
    return 143 if state == "running" else 0  # paused by SIGTERM: let the Job retry and resume


if __name__ == "__main__":
    sys.exit(main())
