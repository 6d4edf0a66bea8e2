"""The five workflows. Each is `async def run(ctx: JobContext, spec) -> Outcome`."""

from likeness.orchestrator.workflows import curate, diversity, open_eyes, storyboard, train

WORKFLOWS = {
    "curate": curate.run,
    "train": train.run,
    "storyboard": storyboard.run,
    "open_eyes": open_eyes.run,
    "diversity": diversity.run,
}
