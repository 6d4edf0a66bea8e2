"""Submit-time validation: every bad spec is refused with INVALID_ARGUMENT naming the field."""

import pytest

from likeness.api.v1 import common_pb2, training_pb2
from likeness.api.v1 import orchestrator_pb2 as o
from likeness.core.errors import InvalidArgument
from likeness.orchestrator.specs import validate


def curate(**kw) -> o.JobSpec:
    g = o.GenerateSource(model="tiny-sdxl", seeds=[1, 2, 3], scenarios=[o.Scenario(name="original", prompt="p")],
                         variants=4)
    c = o.CurateSpec(generate=g, target_count=6)
    for k, v in kw.items():
        if k == "quotas":
            c.quotas.extend(v)
        else:
            setattr(c, k, v)
    return o.JobSpec(curate=c)


def test_valid_curate_passes():
    assert validate(curate(quotas=[common_pb2.Quota(dimension="seed", group="*", min=1, max=3)])) == "curate"


@pytest.mark.parametrize("spec, field, words", [
    (o.JobSpec(), "spec", "must be set"),
    (curate(target_count=0), "spec.curate.target_count", "outside [1, 10000]"),
    (curate(target_count=-5), "spec.curate.target_count", "-5"),
    (curate(target_count=13), "spec.curate.target_count", "more than the 12 candidates"),
    (curate(top_k=-1), "spec.curate.top_k", "negative"),
    (curate(top_k=3), "spec.curate.top_k", "fewer candidates than target_count"),
    (curate(min_quality=1.5), "spec.curate.min_quality", "outside [0.0, 1.0]"),
    (curate(quotas=[common_pb2.Quota(dimension="colour", group="*", max=1)]), "spec.curate.quotas[0].dimension",
     "colour"),
    (curate(quotas=[common_pb2.Quota(dimension="seed", group="*", min=3, max=2)]), "spec.curate.quotas[0]",
     "above max"),
    (curate(quotas=[common_pb2.Quota(dimension="seed", group="*", max=1)]), "spec.curate.quotas[0].max",
     "cannot reach target_count"),
    (curate(quotas=[common_pb2.Quota(dimension="seed", group="*", min=3)]), "spec.curate.quotas[0].min",
     "above target_count"),
    (curate(quotas=[common_pb2.Quota(dimension="seed", group="1", min=4),
                    common_pb2.Quota(dimension="seed", group="2", min=4)]),
     "spec.curate.quotas", "minimums sum to 8"),
    (o.JobSpec(storyboard=o.StoryboardSpec(model="m")), "spec.storyboard.frame_prompts", "outside [1, 100]"),
    (o.JobSpec(storyboard=o.StoryboardSpec(model="m", frame_prompts=["a"], clip_threshold=1.2)),
     "spec.storyboard.clip_threshold", "outside"),
    (o.JobSpec(storyboard=o.StoryboardSpec(model="m", frame_prompts=["a"], retry_budget=50)),
     "spec.storyboard.retry_budget", "outside [0, 20]"),
    (o.JobSpec(open_eyes=o.OpenEyesSpec(model="m")), "spec.open_eyes.image", "set `data` or `uri`"),
    (o.JobSpec(open_eyes=o.OpenEyesSpec(model="m", image=common_pb2.ImageInput(uri="s3://b/k"), variations=40)),
     "spec.open_eyes.variations", "outside [1, 16]"),
    (o.JobSpec(diversity=o.DiversitySpec(model="m", reference_uri="s3://b/r",
                                         settings=[o.DiversitySetting(name="a", count=1)])),
     "spec.diversity.settings[0].count", "outside [2, 1000]"),
    (o.JobSpec(diversity=o.DiversitySpec(model="m", reference_uri="s3://b/r", nearest_k=8,
                                         settings=[o.DiversitySetting(name="a", count=5)])), "spec.diversity.nearest_k",
                                         "below"),
    (o.JobSpec(train=o.TrainSpec()), "spec.train.run.base_model", "empty"),
    (o.JobSpec(train=o.TrainSpec(run=training_pb2.RunSpec(base_model="tiny-sdxl", dataset_uri="s3://b/d/"))),
     "spec.train.run.rank", "0 is outside [1, 256]"),
])
def test_bad_specs_name_the_field(spec, field, words):
    with pytest.raises(InvalidArgument) as err:
        validate(spec)
    assert err.value.field == field
    assert words in str(err.value)
