"""Every repeated, string and bytes field of every request message has a size limit: in the one
table (core.limits.LIMITS), in its proto comment and in docs/api.md, and enforced. The walk below
reaches each limited field from every RPC's request type by reflection and proves that a value at
the limit is accepted and one just over it refused, naming the field, its size and the limit; a live
server proves the boundary applies to every RPC of every service."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor

from likeness.api.v1 import (
    detection_pb2,
    detection_pb2_grpc,
    embedding_pb2,
    embedding_pb2_grpc,
    generation_pb2,
    generation_pb2_grpc,
    orchestrator_pb2,
    orchestrator_pb2_grpc,
    restoration_pb2,
    restoration_pb2_grpc,
    training_pb2,
    training_pb2_grpc,
)
from likeness.core import limits
from likeness.core.errors import InvalidArgument
from tests.helpers import ROOT

MODULES = (detection_pb2, embedding_pb2, generation_pb2, orchestrator_pb2, restoration_pb2, training_pb2)
TEXT = (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES)


def methods():
    for module in MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                yield module, service, method


def message_class(descriptor):
    module = next(m for m in MODULES if descriptor.file.name == m.DESCRIPTOR.name)
    names = descriptor.full_name.removeprefix(limits.PACKAGE).split(".")
    cls = getattr(module, names[0])
    for name in names[1:]:
        cls = getattr(cls, name)
    return cls


def paths(descriptor, prefix=()) -> Iterator[tuple[tuple, str, int]]:
    """(field path, limit key, limit) of every limited field below a request type."""
    for fd in descriptor.fields:
        path = (*prefix, fd)
        key = limits.key_of(descriptor, fd)
        if limits.limited(fd):
            yield path, key, limits.LIMITS[key]
            if limits.is_map(fd):
                entry = fd.message_type
                for part in ("key", "value"):
                    k = limits.key_of(entry, entry.fields_by_name[part])
                    yield path, k, limits.LIMITS[k]
            elif fd.is_repeated and fd.type in TEXT:
                yield path, key + "[]", limits.LIMITS[key + "[]"]
        if fd.message_type is not None and fd.message_type.full_name.startswith(limits.PACKAGE) \
                and not limits.is_map(fd):
            yield from paths(fd.message_type, path)


def build(cls, path, key: str, n: int):
    """A request whose field at `path` has size `n` (items, entries or characters, per `key`)."""
    root = cls()
    msg = root
    for fd in path[:-1]:
        if fd.is_repeated:
            msg = getattr(msg, fd.name).add()
        else:
            msg = getattr(msg, fd.name)
            msg.SetInParent()
    fd = path[-1]
    value = getattr(msg, fd.name)
    if limits.is_map(fd):
        if key.endswith("Entry.key"):
            value["k" * n] = ""
        elif key.endswith("Entry.value"):
            value["k"] = "v" * n
        else:
            value.update({f"k{i}": "" for i in range(n)})
    elif key.endswith("[]"):
        value.append("x" * n)
    elif fd.is_repeated and fd.type in TEXT:
        value.extend([""] * n)
    elif fd.is_repeated and fd.message_type is not None:
        holder = type(msg)()
        getattr(holder, fd.name).add()
        msg.MergeFromString(holder.SerializeToString() * n)  # n empty elements, decoded in C
    elif fd.is_repeated:
        value.extend([0] * n)
    elif fd.type == FieldDescriptor.TYPE_BYTES:
        setattr(msg, fd.name, b"x" * n)
    else:
        setattr(msg, fd.name, "x" * n)
    return root


CASES = [(method.input_type.full_name.removeprefix(limits.PACKAGE), ".".join(f.name for f in path), key, limit,
          method.input_type, path)
         for _, _, method in methods() for path, key, limit in paths(method.input_type)]
SEEN_INPUTS: set[str] = set()
UNIQUE = [c for c in CASES if (c[0], c[1], c[2]) not in SEEN_INPUTS and not SEEN_INPUTS.add((c[0], c[1], c[2]))]


def test_every_limited_field_of_every_request_has_one_limit():
    fields = limits.request_fields()
    assert sorted(set(fields) - set(limits.LIMITS)) == [], "fields without a limit"
    assert sorted(set(limits.LIMITS) - set(fields)) == [], "limits of fields that do not exist"
    assert len(UNIQUE) > len(limits.LIMITS)  # shared types (ImageInput) are reached from many requests


def _proto_comments() -> dict[tuple[str, str], str]:
    """(message path, field) -> the comment lines just above the field, for every proto file."""
    out: dict[tuple[str, str], str] = {}
    for proto in sorted((ROOT / "protos/likeness/v1").glob("*.proto")):
        stack: list[tuple[str, str]] = []
        comment: list[str] = []
        for line in proto.read_text().splitlines():
            st = line.strip()
            if st.startswith("//"):
                comment.append(st[2:].strip())
                continue
            opened = re.match(r"(message|enum|oneof|service)\s+(\w+)\s*\{", st)
            if opened:
                stack.append((opened.group(1), opened.group(2)))
            elif st == "}":
                stack.pop()
            else:
                field = re.match(r"(?:repeated\s+|optional\s+)?(?:map<[^>]+>|[\w.]+)\s+(\w+)\s*=\s*\d+;", st)
                if field and stack:
                    messages = ".".join(name for kind, name in stack if kind == "message")
                    out[(messages, field.group(1))] = " ".join(comment)
            comment = []
    return out


def test_every_proto_comment_states_its_limit():
    comments = _proto_comments()
    missing = []
    for key, limit in limits.LIMITS.items():
        message, _, field = key.removesuffix("[]").rpartition(".")
        if message.endswith("Entry"):  # a map's key or value: stated on the map field
            message, _, entry = message.rpartition(".")
            field = re.sub(r"(?<!^)(?=[A-Z])", "_", entry.removesuffix("Entry")).lower()
        text = comments[(message, field)]
        if f"{limit:,}" not in text and not (limit < 1000 and re.search(rf"\b{limit}\b", text)):
            missing.append(f"{key} ({limit:,})")
    assert missing == []


@pytest.mark.parametrize("doc", ["docs/api.md", "docs/reliability.md"])
def test_docs_table_is_the_limits_table(doc):
    assert limits.table_markdown() in (ROOT / doc).read_text(), f"{doc}: paste `python -m likeness.core.limits`"


@pytest.mark.slow
@pytest.mark.parametrize("request_type, path, key, limit, descriptor, fields", UNIQUE,
                         ids=[f"{c[0]}.{c[1]}:{c[2].rpartition('.')[2]}" for c in UNIQUE])
def test_limit_enforced_from_the_request_root(request_type, path, key, limit, descriptor, fields):
    cls = message_class(descriptor)
    limits.check(build(cls, fields, key, limit))  # at the limit: accepted
    with pytest.raises(InvalidArgument) as info:
        limits.check(build(cls, fields, key, limit + 1))
    message = str(info.value)
    assert f"{limit + 1:,}" in message and f"over the limit of {limit:,}" in message, message
    assert fields[-1].name in info.value.field, (info.value.field, path)
    assert info.value.field.replace("[0]", "").startswith(path.rpartition(".")[0]), (info.value.field, path)


def test_unknown_fields_are_dropped_at_the_boundary():
    spec = orchestrator_pb2.JobSpec(curate=orchestrator_pb2.CurateSpec(target_count=1))
    raw = spec.SerializeToString() + b"\xfa\x3e\x05hello"  # field 999, length-delimited
    request = orchestrator_pb2.SubmitRequest(spec=orchestrator_pb2.JobSpec.FromString(raw))
    assert request.spec.SerializeToString() != spec.SerializeToString()
    limits.check(request)
    assert request.spec.SerializeToString() == spec.SerializeToString()


# -- the boundary of a live server ----------------------------------------------------------------

GRPC = {detection_pb2: detection_pb2_grpc, embedding_pb2: embedding_pb2_grpc, generation_pb2: generation_pb2_grpc,
        orchestrator_pb2: orchestrator_pb2_grpc, restoration_pb2: restoration_pb2_grpc,
        training_pb2: training_pb2_grpc}


@contextlib.contextmanager
def bare_runtime(settings):
    """Every service's generated base servicer (each method answers UNIMPLEMENTED) on one runtime:
    a call that reaches a servicer got past the boundary. Yields the runtime (port, metrics_port)."""
    from likeness.core.server import Service, ServiceRuntime

    servicers, names = [], []
    for module, service, _ in methods():
        grpc_module = GRPC[module]
        pair = (getattr(grpc_module, f"add_{service.name}Servicer_to_server"),
                getattr(grpc_module, f"{service.name}Servicer")())
        if pair[0] not in [p[0] for p in servicers]:
            servicers.append(pair)
            names.append(service.full_name)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box = {}

    async def main():
        box["runtime"] = runtime = ServiceRuntime(Service("limits-test", servicers, names), settings)
        await runtime.start()
        ready.set()
        await runtime._stopped.wait()

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    thread.start()
    assert ready.wait(30)
    try:
        yield box["runtime"]
    finally:
        asyncio.run_coroutine_threadsafe(box["runtime"].stop(grace=0), loop).result(30)
        thread.join(30)


@pytest.fixture(scope="module")
def bare_server():
    from likeness.core.settings import CommonSettings

    with bare_runtime(CommonSettings(port=0, metrics_enabled=False, drain_seconds=0)) as runtime:
        yield runtime.port


def test_every_rpc_of_every_service_refuses_an_oversized_field(bare_server):
    checked = 0
    with grpc.insecure_channel(f"127.0.0.1:{bare_server}") as channel:
        for _, service, method in methods():
            cases = [c for c in paths(method.input_type) if not c[1].endswith(("[]", "Entry.key", "Entry.value"))]
            if not cases:  # ListModelsRequest: nothing to bound
                continue
            checked += 1
            path, key, limit = min(cases, key=lambda c: c[2])  # the cheapest to exceed
            cls = message_class(method.input_type)
            name = f"/{service.full_name}/{method.name}"
            call = (channel.unary_stream if method.server_streaming else channel.unary_unary)(
                name, request_serializer=cls.SerializeToString, response_deserializer=lambda b: b)

            def status(request, call=call, streaming=method.server_streaming):
                try:
                    result = call(request, timeout=30)
                    if streaming:
                        list(result)
                    return grpc.StatusCode.OK, ""
                except grpc.RpcError as exc:
                    return exc.code(), exc.details()

            code, details = status(build(cls, path, key, limit + 1))
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (name, code, details)
            assert path[-1].name in details and f"over the limit of {limit:,}" in details, (name, details)
            assert status(build(cls, path, key, limit))[0] == grpc.StatusCode.UNIMPLEMENTED, name
    assert checked == sum(1 for _ in methods()) - 1

