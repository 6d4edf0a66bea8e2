"""A curate import source is checked at Submit: layout, at least one image, no ambiguous ids; each
refusal is INVALID_ARGUMENT showing the expected layout."""

from __future__ import annotations

import grpc
import pytest

from likeness.api.v1 import orchestrator_pb2 as o
from likeness.core.errors import InvalidArgument
from likeness.orchestrator import imports
from tests.orchestrator.test_listing import api  # noqa: F401  (fixture)


def refusal(keys: list[str], prefix: str = "in/") -> str:
    with pytest.raises(InvalidArgument) as info:
        imports.layout("s3://b/" + prefix, prefix, keys)
    assert info.value.field == imports.FIELD
    assert "<seed>/<image_type>/<name>.png" in str(info.value)
    return str(info.value)


def test_layouts_accepted():
    items = imports.layout("s3://b/in/", "in/", ["in/1/original/a.png", "in/1/beach/b.jpg", "in/2/original/a.txt",
                                                 "in/2/original/a.webp"])
    assert [(i.id, i.seed, i.image_type) for i in items] == [
        ("1-beach-b", "1", "beach"), ("1-original-a", "1", "original"), ("2-original-a", "2", "original")]
    flat = imports.layout("s3://b/in", "in/", ["in/x.png", "in/y.PNG"])
    assert [(i.id, i.seed, i.image_type) for i in flat] == [("x", "0", "original"), ("y", "0", "original")]


def test_layout_mistakes_refused_with_the_expected_layout():
    # one level above <seed>/<type>/<name>: the message names the key and the prefix to use instead
    message = refusal(["in/run-42/1/scenario/wide.png", "in/run-42/2/original/a.png"])
    assert "'run-42/1/scenario/wide.png' is 4 levels below it" in message and "import 's3://b/in/run-42/'" in message
    assert "2 levels below" in refusal(["in/scenario/wide.png"])  # one level too low
    assert "holds no PNG, JPEG or WebP image" in refusal([])
    assert "found 1 other objects, for example 'in/a.txt'" in refusal(["in/a.txt"])
    assert "mixes images" in refusal(["in/a.png", "in/1/original/b.png"])
    assert "same candidate id '1-original-a-b'" in refusal(["in/1/original/a b.png", "in/1/original/a-b.png"])


def test_submit_refuses_a_bad_layout_before_queueing(api, tmp_path):  # noqa: F811
    stub, settings = api
    root = tmp_path / "store" / "cands" / "run-42" / "1" / "scenario"
    root.mkdir(parents=True)
    (root / "wide.png").write_bytes(b"not decoded at Submit")
    spec = o.JobSpec(curate=o.CurateSpec(import_source=o.ImportSource(uri=f"file://{tmp_path}/store/cands/"),
                                         target_count=1))
    with pytest.raises(grpc.RpcError) as err:
        stub.Submit(o.SubmitRequest(spec=spec), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "4 levels below it" in err.value.details() and "<seed>/<image_type>/<name>.png" in err.value.details()
    assert list(stub.List(o.ListRequest(), timeout=30).jobs) == []
    spec.curate.import_source.uri = f"file://{tmp_path}/store/cands/run-42/"
    assert stub.Submit(o.SubmitRequest(spec=spec), timeout=30).job.state == o.JOB_STATE_QUEUED


def test_generation_and_curate_output_prefix_must_not_be_a_uri():
    from likeness.core.uris import validate_prefix
    from likeness.orchestrator import specs

    with pytest.raises(InvalidArgument, match="is a URI"):
        validate_prefix("s3://bucket/out/", "output_prefix")
    with pytest.raises(InvalidArgument, match="spec.curate.output_prefix"):
        specs.validate(o.JobSpec(curate=o.CurateSpec(import_source=o.ImportSource(uri="s3://b/x/"), target_count=1,
                                                     output_prefix="s3://b/out/")))
    assert validate_prefix("generated/run-1/") == "generated/run-1/"
