"""Size limits of every repeated, string and bytes field of every request message, enforced by one
generic validator at the server boundary (`LimitsInterceptor`, installed by core.server).

`LIMITS` is the one table: `Message.field` -> limit. The unit follows the field: items for a
repeated field (map entries for a map), characters for a string, bytes for a bytes field. A key with
a `[]` suffix bounds each element of a repeated string field. Map keys and values are bounded through
their entry message (`SelectionCandidate.GroupsEntry.key`). docs/api.md carries the same table
(`python -m likeness.core.limits` prints it) and every proto field comment states its limit; the
tests check both against this table.

The validator runs on the decoded message, before the servicer sees it, so nothing proportional to a
field's size is allocated beyond the decoded message itself. It walks the message by descriptor but
skips every field whose limit (and every subtree whose smallest limit) is not below the request's
encoded size: no field can be longer than the message that holds it, so a typical small request
costs one ByteSize() call and a few comparisons.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
from dataclasses import dataclass, field

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from likeness.core.errors import InvalidArgument
from likeness.core.handler_wrap import WrappingInterceptor

PACKAGE = "likeness.v1."
MiB = 1024 * 1024
URI = 2048
PREFIX = 1024
PROMPT = 2000
MODEL = 128
ID = 64  # job and run ids
K8S_KEY, K8S_VALUE = 317, 63  # Kubernetes label key (prefix 253 + "/" + name 63) and value

LIMITS: dict[str, int] = {
    # common.proto
    "ImageInput.data": 32 * MiB,
    "ImageInput.uri": URI,
    "Vector.values": 8192,
    "Quota.dimension": 64,
    "Quota.group": 256,
    # detection.proto
    "DetectRequest.images": 1024,
    "AssessRequest.images": 1024,
    # embedding.proto
    "EmbedImagesRequest.images": 4096,
    "EmbedTextsRequest.texts": 1024,
    "EmbedTextsRequest.texts[]": PROMPT,
    "ScoreRequest.images": 4096,
    "ScoreRequest.texts": 4096,
    "ScoreRequest.texts[]": PROMPT,
    "ClusterRequest.items": 1_000_000,
    "LabeledVector.id": 256,
    "SelectRequest.candidates": 100_000,
    "SelectRequest.quotas": 1000,
    "SelectionCandidate.id": 256,
    "SelectionCandidate.groups": 16,
    "SelectionCandidate.GroupsEntry.key": 64,
    "SelectionCandidate.GroupsEntry.value": 256,
    "DiversityRequest.reference": 100_000,
    "DiversityRequest.generated": 100_000,
    "DiversityRequest.generated_poses": 100_000,
    # generation.proto
    "GenerateRequest.model": MODEL,
    "GenerateRequest.prompt": PROMPT,
    "GenerateRequest.negative_prompt": PROMPT,
    "GenerateRequest.adapters": 8,
    "GenerateRequest.output_prefix": PREFIX,
    "LoraAdapter.uri": URI,
    "ControlInput.model": MODEL,
    "GenerateRequest.controls": 4,
    # orchestrator.proto
    "SubmitRequest.idempotency_key": 128,
    "GenerateSource.model": MODEL,
    "GenerateSource.seeds": 1000,
    "GenerateSource.scenarios": 100,
    "GenerateSource.negative_prompt": PROMPT,
    "Scenario.name": 64,
    "Scenario.prompt": PROMPT,
    "ImportSource.uri": URI,
    "CurateSpec.quotas": 1000,
    "CurateSpec.trigger_token": 128,
    "CurateSpec.output_prefix": PREFIX,
    "StoryboardSpec.model": MODEL,
    "StoryboardSpec.character": PROMPT,
    "StoryboardSpec.frame_prompts": 100,
    "StoryboardSpec.frame_prompts[]": PROMPT,
    "StoryboardSpec.adapters": 8,
    "StoryboardSpec.negative_prompt": PROMPT,
    "StoryboardSpec.control_model": MODEL,
    "OpenEyesSpec.model": MODEL,
    "OpenEyesSpec.prompt": 1000,
    "OpenEyesSpec.negative_prompt": 1000,
    "DiversitySetting.name": 64,
    "DiversitySpec.model": MODEL,
    "DiversitySpec.prompt": PROMPT,
    "DiversitySpec.reference_uri": URI,
    "DiversitySpec.settings": 50,
    "WatchRequest.job_id": ID,
    "GetRequest.job_id": ID,
    "ListRequest.page_token": 256,
    "CancelRequest.job_id": ID,
    # restoration.proto
    "RegionMaskItem.landmarks": 64,
    "RegionMaskRequest.items": 64,
    "RegionMaskRequest.output_prefix": PREFIX,
    "CompositeRequest.items": 64,
    "CompositeRequest.output_prefix": PREFIX,
    "RestoreItem.landmarks": 64,
    "RestoreRequest.items": 32,
    "RestoreRequest.model": 64,
    "RestoreRequest.output_prefix": PREFIX,
    "ControlFace.landmarks": 64,
    "ControlImageItem.faces": 32,
    "ControlImageRequest.items": 16,
    "ControlImageRequest.output_prefix": PREFIX,
    # training.proto
    "Toleration.key": K8S_KEY,
    "Toleration.operator": 16,
    "Toleration.value": K8S_VALUE,
    "Toleration.effect": 32,
    "KubernetesOptions.node_selector": 32,
    "KubernetesOptions.NodeSelectorEntry.key": K8S_KEY,
    "KubernetesOptions.NodeSelectorEntry.value": K8S_VALUE,
    "KubernetesOptions.tolerations": 32,
    "KubernetesOptions.image": 512,
    "KubernetesOptions.memory": 32,
    "KubernetesOptions.cpu": 32,
    "RunSpec.name": 256,
    "RunSpec.base_model": MODEL,
    "RunSpec.dataset_uri": URI,
    "RunSpec.trigger_token": 128,
    "RunSpec.lr_scheduler": 32,
    "RunSpec.sample_prompts": 64,
    "RunSpec.sample_prompts[]": PROMPT,
    "RunSpec.sample_seeds": 64,
    "RunSpec.output_prefix": PREFIX,
    "StartRunRequest.resume_from_run_id": ID,
    "WatchRunRequest.run_id": ID,
    "GetRunRequest.run_id": ID,
    "ListRunsRequest.page_token": 256,
    "CancelRunRequest.run_id": ID,
    "CompareRunsRequest.run_ids": 20,
    "CompareRunsRequest.run_ids[]": ID,
}

UNLIMITED = 1 << 62


def key_of(message: Descriptor, fd: FieldDescriptor) -> str:
    return f"{message.full_name.removeprefix(PACKAGE)}.{fd.name}"


def is_map(fd: FieldDescriptor) -> bool:
    return fd.message_type is not None and fd.message_type.GetOptions().map_entry


def limited(fd: FieldDescriptor) -> bool:
    """Whether a field needs a limit: repeated (maps included), string or bytes."""
    return fd.is_repeated or fd.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES)


def unit_of(fd: FieldDescriptor) -> str:
    if fd.is_repeated:
        return "entries" if is_map(fd) else "items"
    return "bytes" if fd.type == FieldDescriptor.TYPE_BYTES else "characters"


@dataclass
class _FieldCheck:
    name: str
    limit: int
    unit: str
    each: int | None = None  # per-element limit of a repeated string
    sub: _Plan | None = None  # plan of the field's message type (elements for repeated)
    map_key: int | None = None
    map_value: int | None = None
    repeated: bool = False
    bound: int = UNLIMITED  # smallest limit in this field and below: skipped when >= the request size


@dataclass
class _Plan:
    checks: list[_FieldCheck] = field(default_factory=list)
    bound: int = UNLIMITED


_PLANS: dict[str, _Plan] = {}


def _limit(key: str) -> int:
    try:
        return LIMITS[key]
    except KeyError:
        raise KeyError(f"no size limit for {key}: add it to likeness.core.limits.LIMITS") from None


def plan_of(message: Descriptor) -> _Plan:
    """The checks of one message type (built once; message types here are not recursive)."""
    plan = _PLANS.get(message.full_name)
    if plan is not None:
        return plan
    plan = _PLANS[message.full_name] = _Plan()
    for fd in message.fields:
        own = limited(fd)
        nested = fd.message_type is not None and fd.message_type.full_name.startswith(PACKAGE)
        if not own and not nested:
            continue
        key = key_of(message, fd)
        check = _FieldCheck(fd.name, _limit(key) if own else UNLIMITED, unit_of(fd), repeated=fd.is_repeated)
        if is_map(fd):
            entry = fd.message_type
            check.map_key = _limit(f"{key_of(entry, entry.fields_by_name['key'])}")
            check.map_value = _limit(f"{key_of(entry, entry.fields_by_name['value'])}")
            check.bound = min(check.limit, check.map_key, check.map_value)
        elif nested:
            check.sub = plan_of(fd.message_type)
            check.bound = min(check.limit, check.sub.bound)
        elif fd.is_repeated and fd.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
            check.each = _limit(key + "[]")
            check.bound = min(check.limit, check.each)
        else:
            check.bound = check.limit
        if check.bound < UNLIMITED:
            plan.checks.append(check)
    plan.bound = min((c.bound for c in plan.checks), default=UNLIMITED)
    return plan


def _over(path: str, size: int, limit: int, unit: str) -> InvalidArgument:
    return InvalidArgument(path, f"{size:,} {unit}, over the limit of {limit:,}")


def _walk(msg: Message, plan: _Plan, prefix: str, budget: int) -> None:
    for c in plan.checks:
        if c.bound >= budget:
            continue
        path = prefix + c.name
        value = getattr(msg, c.name)
        if c.repeated:
            n = len(value)
            if n > c.limit:
                raise _over(path, n, c.limit, c.unit)
            if c.map_key is not None:
                for k, v in value.items():
                    if len(k) > c.map_key:
                        raise _over(f"{path}[key {len(k):,} characters]", len(k), c.map_key, "characters")
                    if len(v) > c.map_value:
                        raise _over(f"{path}[{k!r}]", len(v), c.map_value, "characters")
            elif c.each is not None:
                for i, item in enumerate(value):
                    if len(item) > c.each:
                        raise _over(f"{path}[{i}]", len(item), c.each, "characters")
            elif c.sub is not None and c.sub.bound < budget:
                for i, item in enumerate(value):
                    _walk(item, c.sub, f"{path}[{i}].", budget)
        elif c.sub is not None:
            if msg.HasField(c.name):
                _walk(value, c.sub, path + ".", budget)
        elif len(value) > c.limit:
            raise _over(path, len(value), c.limit, c.unit)


def check(request: Message) -> None:
    """INVALID_ARGUMENT naming the first field over its limit, its size and the limit. Unknown fields
    (from a newer or hostile client) are dropped first: nothing downstream may store them."""
    descriptor = request.DESCRIPTOR
    if not descriptor.full_name.startswith(PACKAGE):
        return
    request.DiscardUnknownFields()
    plan = plan_of(descriptor)
    if not plan.checks:
        return
    budget = request.ByteSize()
    if plan.bound < budget:
        _walk(request, plan, "", budget)


# Above this encoded size the walk (Python, O(elements)) runs in a worker thread, so a large batch
# (a 1,000,000-item Cluster takes about a second) does not stall the server's event loop.
THREAD_ABOVE_BYTES = 1024 * 1024


# After a call whose request was this large, the request is collected and freed heap handed back to
# the system. A refused request stays referenced from the error's traceback, in a reference cycle
# (exception -> frame -> exception) that only the cyclic collector frees, and an idle server
# allocates too little to trigger it; glibc then keeps the freed pages. Without this, measured: a
# bare server grew from 61 MB to 749 MB over eight refused 26-31 MB Submits.
TRIM_ABOVE_BYTES = 4 * 1024 * 1024
_trim_pending = False


def _malloc_trim() -> None:
    global _trim_pending
    _trim_pending = False
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _trim_soon() -> None:
    """Once the call is over (gRPC drops the request a moment after the handler returns)."""
    global _trim_pending
    if not _trim_pending:
        _trim_pending = True
        asyncio.get_running_loop().call_later(1.0, _malloc_trim)


async def check_async(request: Message, size: int) -> None:
    """`check`, in a worker thread for a large request (`size`: its encoded size)."""
    if size > THREAD_ABOVE_BYTES:
        await asyncio.to_thread(check, request)
    else:
        check(request)


def _checked_unary(behavior):
    async def handler(request, context):
        size = request.ByteSize()
        try:
            await check_async(request, size)
            return await behavior(request, context)
        finally:
            if size > TRIM_ABOVE_BYTES:
                _trim_soon()
    return handler


def _checked_stream(behavior):
    async def handler(request, context):
        size = request.ByteSize()
        try:
            await check_async(request, size)
            async for item in behavior(request, context):
                yield item
        finally:
            if size > TRIM_ABOVE_BYTES:
                _trim_soon()
    return handler


class LimitsInterceptor(WrappingInterceptor):
    """Applies `check` to every likeness.v1 request before its servicer runs. Installed inside the
    observability interceptor, which turns the InvalidArgument into the call's status."""

    def wrap(self, handler, method: str):
        if handler.unary_unary:
            return handler._replace(unary_unary=_checked_unary(handler.unary_unary))
        if handler.unary_stream:
            return handler._replace(unary_stream=_checked_stream(handler.unary_stream))
        return handler


def request_fields() -> dict[str, FieldDescriptor]:
    """Every field that needs a limit, by LIMITS key, in every message reachable from an RPC's
    request type of every likeness.v1 service."""
    from likeness.api.v1 import (
        detection_pb2,
        embedding_pb2,
        generation_pb2,
        orchestrator_pb2,
        restoration_pb2,
        training_pb2,
    )

    found: dict[str, FieldDescriptor] = {}
    seen: set[str] = set()

    def visit(message: Descriptor) -> None:
        if message.full_name in seen:
            return
        seen.add(message.full_name)
        for fd in message.fields:
            if limited(fd):
                found[key_of(message, fd)] = fd
                if fd.is_repeated and fd.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
                    found[key_of(message, fd) + "[]"] = fd
            if fd.message_type is not None and fd.message_type.full_name.startswith(PACKAGE):
                visit(fd.message_type)

    for module in (detection_pb2, embedding_pb2, generation_pb2, orchestrator_pb2, restoration_pb2, training_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                visit(method.input_type)
    return found


def table_markdown() -> str:
    """The limits as the Markdown table of docs/api.md."""
    fields = request_fields()
    rows = ["| field | limit | unit |", "|---|---:|---|"]
    for key, limit in LIMITS.items():
        unit = "characters each" if key.endswith("[]") else unit_of(fields[key])
        rows.append(f"| `{key}` | {limit:,} | {unit} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table_markdown())
