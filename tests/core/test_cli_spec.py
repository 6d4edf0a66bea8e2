"""The job commands' flags come from the spec messages: every field of every spec (nested ones
included) has a flag, and the flags build the spec the field comments describe."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format
from typer.testing import CliRunner

from likeness.api.v1 import common_pb2, generation_pb2, training_pb2
from likeness.api.v1 import orchestrator_pb2 as o
from likeness.client import cli_spec
from likeness.client.cli import app


def leaf_paths(desc, prefix=()) -> set[tuple[str, ...]]:
    out = set()
    for f in desc.fields:
        if f.message_type is not None and not f.is_repeated and f.message_type.full_name not in cli_spec.LEAF_MESSAGES:
            out |= leaf_paths(f.message_type, (*prefix, f.name))
        else:
            out.add((*prefix, f.name))
    return out


@pytest.mark.parametrize("kind", sorted(cli_spec.SPECS))
def test_every_spec_field_has_a_flag_with_its_comment(kind):
    desc = getattr(o, cli_spec.SPECS[kind]).DESCRIPTOR
    flags = cli_spec.flags_for(kind)
    assert {f.path for f in flags} == leaf_paths(desc)
    names = [n for f in flags for n in f.names]
    assert len(names) == len(set(names)), "two fields share a flag"
    helps = [cli_spec._help(f) for f in flags]
    assert all(h and h != f.field.name for h, f in zip(helps, flags, strict=True)), "a flag without its field comment"


def dry_run(*args: str) -> dict:
    result = CliRunner().invoke(app, [*args, "--dry-run"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_flags_build_the_spec():
    spec = o.JobSpec()
    got = dry_run("curate", "--generate-seeds", "1", "--generate-seeds", "2", "--generate-scenario",
                  "name=beach,prompt={trigger} on a beach", "--target", "2", "--quota", "dimension=seed,group=*,max=1",
                  "--policy-max-yaw", "30", "--min-quality", "0.4")
    json_format.ParseDict(got, spec)
    c = spec.curate
    assert c.WhichOneof("source") == "generate" and list(c.generate.seeds) == [1, 2]
    assert c.generate.model == "tiny-sdxl" and c.generate.scenarios[0].prompt == "{trigger} on a beach"
    assert c.quotas[0] == common_pb2.Quota(dimension="seed", group="*", max=1)
    assert c.target_count == 2 and c.policy.max_yaw == 30 and abs(c.min_quality - 0.4) < 1e-6

    spec = json_format.ParseDict(dry_run("train", "s3://b/d/", "--precision", "bf16", "--text-encoder-lr", "1e-5",
                                         "--train-text-encoder", "--sample-prompts", "a", "--sample-prompts", "b"),
                                 o.JobSpec())
    r = spec.train.run
    assert r.dataset_uri == "s3://b/d/" and r.precision == training_pb2.PRECISION_BF16 and r.train_text_encoder
    assert list(r.sample_prompts) == ["a", "b"] and r.base_model == "tiny-sdxl" and r.rank == 4

    spec = json_format.ParseDict(dry_run("storyboard", "--frame", "walking", "--no-require-all-frames",
                                         "--reference-image", "s3://b/me.png", "--reference-scale", "0.5",
                                         "--adapter", '{"uri": "s3://b/a.safetensors", "scale": 0.8}'), o.JobSpec())
    s = spec.storyboard
    assert s.HasField("require_all_frames") and not s.require_all_frames
    assert s.reference_image.uri == "s3://b/me.png" and s.adapters[0].uri == "s3://b/a.safetensors"

    spec = json_format.ParseDict(dry_run("diversity", "s3://b/ref/", "--setting",
                                         "name=a,count=4,sampler=euler_ancestral,guidance_scale=7"), o.JobSpec())
    assert spec.diversity.settings[0].sampler == generation_pb2.SAMPLER_EULER_ANCESTRAL
    assert spec.diversity.settings[0].HasField("guidance_scale")


def test_bad_values_name_the_flag():
    result = CliRunner().invoke(app, ["diversity", "s3://b/", "--setting", "name=a,sampler=warp", "--dry-run"])
    assert result.exit_code == 2 and "--setting" in result.output and "warp" in result.output
    result = CliRunner().invoke(app, ["curate", "s3://b/", "--generate-seeds", "1", "--dry-run"])
    assert result.exit_code == 2 and "not both" in result.output
