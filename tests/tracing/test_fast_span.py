"""FastServerSpans makes the span `Tracer.start_span` makes: same sampling decision, ids, flags,
trace state, parent, attributes, resource, scope, and a span that behaves like the SDK's afterwards
(attribute cleaning, events, status, end once). Two providers with the same id sequence start one
span each way; their exported spans must be equal field by field."""

from __future__ import annotations

import random

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider, sampling
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState

from likeness.core.tracing_sampling import sampler_for
from likeness.core.tracing_span import FastServerSpans, fast_path_supported, ratio_bound

ATTRIBUTES = {"rpc.system": "grpc", "rpc.service": "likeness.v1.S", "rpc.method": "M", "rpc.grpc.status_code": 0}
NAME = "/likeness.v1.S/M"
RESOURCE = Resource.create({"service.name": "likeness-test"})  # created once: detection is slow


class SeededIds(IdGenerator):
    """Random ids from a seed: two generators with one seed give the same sequence."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def generate_span_id(self) -> int:
        return self.rng.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self.rng.getrandbits(128) or 1


class OddSampler(sampling.Sampler):
    """Not a ratio sampler: FastServerSpans must ask it, and use the attributes it returns."""

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None, trace_state=None):
        decision = sampling.Decision.RECORD_AND_SAMPLE if trace_id % 3 else sampling.Decision.RECORD_ONLY
        return sampling.SamplingResult(decision, {**(attributes or {}), "odd": trace_id % 3}, TraceState([("o", "1")]))

    def get_description(self) -> str:
        return "odd"


def pair(sampler, seed: int):
    out = []
    for _ in range(2):
        exported = InMemorySpanExporter()
        provider = TracerProvider(sampler=sampler, resource=RESOURCE, id_generator=SeededIds(seed), shutdown_on_exit=False)
        provider.add_span_processor(SimpleSpanProcessor(exported))
        out.append((provider.get_tracer("likeness.grpc"), exported))
    return out


def parents():
    ts = TraceState([("vendor", "x")])
    yield None
    for remote in (True, False):
        for flags in (TraceFlags.SAMPLED, TraceFlags.DEFAULT, TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID):
            ctx = SpanContext(0xABC, 0xDEF, is_remote=remote, trace_flags=TraceFlags(flags), trace_state=ts)
            yield trace.set_span_in_context(NonRecordingSpan(ctx))
    yield trace.set_span_in_context(trace.INVALID_SPAN)


def exported_fields(span):
    c = span.context
    return (span.name, span.kind, c.trace_id, c.span_id, int(c.trace_flags), c.trace_state.to_header(),
            span.parent, dict(span.attributes), span.resource, span.instrumentation_scope, span.status.status_code,
            span.status.description, [(e.name, dict(e.attributes)) for e in span.events],
            [(lk.context.span_id, dict(lk.attributes)) for lk in span.links], span.dropped_attributes,
            span.dropped_events, span.dropped_links)


def use(span):
    span.set_attribute("rpc.grpc.status_code", 13)
    span.set_attribute("bytes", b"\x00\x01")  # cleaned by the SDK's rules: a bytes value is decoded or dropped
    span.set_attribute("list", [1, 2, 3])
    span.set_status(trace.Status(trace.StatusCode.ERROR, "INTERNAL: boom"))
    span.record_exception(ValueError("boom"), timestamp=1)
    span.add_link(SpanContext(0x1234, 0x5678, is_remote=True), {"why": "retry of"})
    span.end(end_time=span.start_time + 5)
    span.end()  # a second end is ignored, as the SDK ignores it


@pytest.mark.parametrize("sampler", [sampler_for(1.0), sampler_for(0.5), sampler_for(0.0),
                                     sampler_for(0.3, record_unsampled=True), sampling.ParentBased(sampling.ALWAYS_ON),
                                     sampling.ParentBasedTraceIdRatio(0.25), OddSampler()],
                         ids=["ratio1", "ratio.5", "ratio0", "keep.3", "always", "pbtir.25", "odd"])
def test_spans_equal_those_of_start_span(sampler):
    for seed in range(16):
        for context in parents():
            (sdk, sdk_out), (fast, fast_out) = pair(sampler, seed)
            assert fast_path_supported(fast)
            by_sdk = sdk.start_span(NAME, context=context, kind=SpanKind.SERVER, attributes=ATTRIBUTES)
            by_fast = FastServerSpans(fast, NAME, ATTRIBUTES).start(context)
            assert by_fast.is_recording() == by_sdk.is_recording()
            assert by_fast.get_span_context() == by_sdk.get_span_context()
            if not by_sdk.is_recording():
                assert type(by_fast) is type(by_sdk)
                continue
            assert isinstance(by_fast, SdkSpan)
            lazy = {"_events", "_links"}  # class attributes of the fast span until an event or link is added
            assert sorted(set(vars(by_fast)) - {"_hooks"}) == sorted(set(vars(by_sdk)) - lazy), \
                "the SDK's span has fields FastServerSpans does not fill"
            by_fast._start_time = by_sdk._start_time  # the one field that differs (the clock)
            use(by_sdk)
            use(by_fast)
            assert not by_fast.is_recording()
            assert [exported_fields(s) for s in fast_out.get_finished_spans()] == \
                [exported_fields(s) for s in sdk_out.get_finished_spans()]


def test_ratio_sampler_is_decided_inline_and_others_are_asked():
    assert ratio_bound(sampler_for(1.0)) == (1 << 64, False)
    assert ratio_bound(sampler_for(0.1, record_unsampled=True))[1] is True
    assert ratio_bound(OddSampler()) == (None, False)
    assert ratio_bound(sampling.ParentBased(sampling.ALWAYS_ON, remote_parent_not_sampled=sampling.ALWAYS_ON)) == \
        (None, False), "a parent-based sampler with other delegates is asked per span"


def test_the_template_is_not_shared_between_spans():
    (tracer, exported), _ = pair(sampler_for(1.0), 1)
    spans = FastServerSpans(tracer, NAME, ATTRIBUTES)
    first, second = spans.start(), spans.start()
    first.set_attribute("rpc.grpc.status_code", 5)
    first.end()
    second.end()
    got = {s.context.span_id: s.attributes["rpc.grpc.status_code"] for s in exported.get_finished_spans()}
    assert got == {first.get_span_context().span_id: 5, second.get_span_context().span_id: 0}
    assert ATTRIBUTES["rpc.grpc.status_code"] == 0


class Recording(SpanProcessor):
    def __init__(self, calls: list, name: str):
        self.calls, self.name = calls, name

    def on_start(self, span, parent_context=None):
        self.calls.append((self.name, "start", span.name))

    def _on_ending(self, span):
        self.calls.append((self.name, "ending", span.name))

    def on_end(self, span):
        self.calls.append((self.name, "end", span.name))


def test_processors_are_called_as_the_sdk_calls_them_also_those_added_later():
    calls: dict[str, list] = {"sdk": [], "fast": []}
    (sdk, _), (fast, _) = pair(sampler_for(1.0), 3)
    spans = FastServerSpans(fast, NAME, ATTRIBUTES)
    for tracer, start, key in ((sdk, lambda: sdk.start_span(NAME, kind=SpanKind.SERVER), "sdk"),
                               (fast, spans.start, "fast")):
        tracer.span_processor.add_span_processor(Recording(calls[key], "a"))
        start().end()
        tracer.span_processor.add_span_processor(Recording(calls[key], "b"))
        start().end()
    assert calls["fast"] == calls["sdk"]
    assert ("b", "start", NAME) in calls["fast"] and ("b", "ending", NAME) in calls["fast"]


def test_ids_of_the_default_generator_are_drawn_as_it_draws_them():
    """With the SDK's RandomIdGenerator, FastServerSpans draws from the random module itself."""
    tracers = []
    for _ in range(2):
        provider = TracerProvider(sampler=sampler_for(1.0), resource=RESOURCE, shutdown_on_exit=False)
        tracers.append(provider.get_tracer("likeness.grpc"))
    sdk, fast = tracers
    spans = FastServerSpans(fast, NAME, ATTRIBUTES)
    assert spans.random_ids
    for seed in range(5):
        for context in parents():
            random.seed(seed)
            by_sdk = sdk.start_span(NAME, context=context, kind=SpanKind.SERVER, attributes=ATTRIBUTES)
            random.seed(seed)
            by_fast = spans.start(context)
            assert by_fast.get_span_context() == by_sdk.get_span_context()
            assert by_fast.is_recording() == by_sdk.is_recording()
            assert getattr(by_fast, "parent", None) == getattr(by_sdk, "parent", None)
