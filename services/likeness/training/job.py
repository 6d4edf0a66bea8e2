"""Entry point of a Kubernetes Job pod: `python -m likeness.training.job --run-id ID`.

Reads the same LIKENESS_* settings as the service (store, model repository, registry URL from
the Secret), trains the run recorded in the registry and exits 0 when the run ended as recorded
(succeeded, cancelled or failed with its reason); a crash exits non-zero so the Job retries, and
the retry resumes from the run's newest saved state.
"""

from __future__ import annotations

import argparse
import sys

from likeness.core.logging import configure
from likeness.training.app import apply_torch_threads, create_context
from likeness.training.runner import execute
from likeness.training.settings import TrainingSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-id", required=True)
    args = parser.parse_args(argv)
    settings = TrainingSettings()
    configure("training-job", settings.log_level, settings.log_json)
    apply_torch_threads(settings)
    ctx = create_context(settings)
    try:
        state = execute(ctx, args.run_id)
    finally:
        ctx.registry.close()
    print(f"run {args.run_id}: {state}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
