"""Sampling: parent-based with a ratio; spans of unsampled calls that fail or are slow are still
exported, whole (their local root and every child), marked sampled; everything else unsampled is
dropped. Exemplars name only traces that are exported."""

from __future__ import annotations

import time

import pytest
from opentelemetry import propagate
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode, format_trace_id, set_span_in_context

from likeness.core import tracing
from likeness.core.settings import CommonSettings


def make(ratio: float, keep_errors: bool = True, slower_than: float = 0.0):
    exported = InMemorySpanExporter()
    keeping = keep_errors or slower_than > 0
    provider = TracerProvider(sampler=tracing.sampler_for(ratio, record_unsampled=keeping))
    simple = SimpleSpanProcessor(exported)
    keep = tracing.KeepSlowAndFailed(simple, keep_errors, slower_than, max_roots=4) if keeping and ratio < 1 else simple
    provider.add_span_processor(keep)
    return provider.get_tracer("test"), exported, keep


def names(exported) -> list[str]:
    return sorted(s.name for s in exported.get_finished_spans())


def test_ratio_one_exports_everything():
    tracer, exported, _ = make(1.0)
    with tracer.start_as_current_span("call"), tracer.start_as_current_span("child"):
        pass
    assert names(exported) == ["call", "child"]


def test_unsampled_fast_calls_are_dropped():
    tracer, exported, keep = make(0.0, keep_errors=True, slower_than=10)
    with tracer.start_as_current_span("call"), tracer.start_as_current_span("child"):
        pass
    assert names(exported) == []
    assert not keep._held and not keep._root_of, "nothing is held once the root ended"


def test_a_failed_unsampled_call_is_exported_whole_and_marked_sampled():
    tracer, exported, _ = make(0.0)
    with tracer.start_as_current_span("call", set_status_on_exception=False) as root:
        with tracer.start_as_current_span("image.load"), tracer.start_as_current_span("store.get", attributes={"key": "k1"}):
            pass
        with tracer.start_as_current_span("model.run"):
            pass
        root.set_status(Status(StatusCode.ERROR, "INTERNAL"))
    spans = {s.name: s for s in exported.get_finished_spans()}
    assert sorted(spans) == ["call", "image.load", "model.run", "store.get"]
    assert all(s.context.trace_flags.sampled for s in spans.values())
    assert spans["store.get"].parent.span_id == spans["image.load"].context.span_id
    assert dict(spans["store.get"].attributes) == {"key": "k1"}, "a kept span keeps the attributes it started with"
    assert spans["image.load"].parent.span_id == spans["call"].context.span_id
    assert len({s.context.trace_id for s in spans.values()}) == 1


def test_a_slow_unsampled_call_is_exported_and_a_failure_is_not_when_errors_are_not_kept():
    tracer, exported, _ = make(0.0, keep_errors=False, slower_than=0.05)
    with tracer.start_as_current_span("failed-fast") as span:
        span.set_status(Status(StatusCode.ERROR, "INTERNAL"))
    assert names(exported) == []
    with tracer.start_as_current_span("slow"), tracer.start_as_current_span("child"):
        time.sleep(0.06)
    assert names(exported) == ["child", "slow"]


def test_a_sampled_caller_decides_for_the_callee_and_an_unsampled_one_leaves_the_local_rule():
    tracer, exported, _ = make(0.0)
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    sampled = propagate.extract({"traceparent": f"00-{trace_id}-b7ad6b7169203331-01"})
    with tracer.start_as_current_span("server", context=sampled):
        pass
    got = [(s.name, format_trace_id(s.context.trace_id)) for s in exported.get_finished_spans()]
    assert got == [("server", trace_id)]
    exported.clear()
    unsampled = propagate.extract({"traceparent": f"00-{trace_id}-b7ad6b7169203331-00"})
    with tracer.start_as_current_span("server", context=unsampled):
        pass
    assert names(exported) == [], "an unsampled caller and a fast, good call: dropped"
    with tracer.start_as_current_span("server", context=unsampled) as span:
        span.set_status(Status(StatusCode.ERROR, "UNAVAILABLE"))
    kept = exported.get_finished_spans()
    assert [s.name for s in kept] == ["server"] and format_trace_id(kept[0].context.trace_id) == trace_id
    assert kept[0].parent.span_id == 0xB7AD6B7169203331, "still a child of the caller's span"


def test_held_spans_are_bounded():
    tracer, _, keep = make(0.0)
    roots = [tracer.start_span(f"root{i}") for i in range(10)]
    for root in roots:
        child = tracer.start_span("child", context=set_span_in_context(root))
        child.end()
    assert len(keep._held) == 4
    for root in roots:
        root.end()
    assert not keep._held and not keep._root_of


@pytest.fixture
def configured():
    exported = InMemorySpanExporter()
    yield lambda **kw: (tracing.configure("test", CommonSettings(tracing_enabled=True, **kw), exporter=exported),
                        exported)[1]
    tracing.shutdown()


def test_exemplars_name_exported_traces_only(configured):
    configured(tracing_sample_ratio=0.0, tracing_keep_errors=True, tracing_keep_slower_than_seconds=1.0)
    assert tracing.exemplar() is None, "outside any span"
    with tracing.span_under("call", ""):
        assert tracing.exemplar(failed=False, seconds=0.01) is None, "unsampled, good and fast: not exported"
        failed = tracing.exemplar(failed=True, seconds=0.01)
        slow = tracing.exemplar(failed=False, seconds=2.0)
        assert failed == slow == {"trace_id": tracing.current_trace_id()}


def test_off_means_no_spans_and_no_trace_ids():
    assert not tracing.enabled()
    with tracing.span("store.get") as span:
        assert not span.get_span_context().is_valid
    assert tracing.current_trace_id() == "" and tracing.traceparent() == "" and tracing.exemplar() is None


def test_child_spans_need_a_trace_to_join(configured):
    exported = configured(tracing_sample_ratio=1.0)
    with tracing.span("store.get"):
        pass  # start-up work outside any call: no trace of its own
    with tracing.span_under("job curate", ""), tracing.span("stage validate"):
        parent = tracing.traceparent()
    tracing.flush()
    assert names(exported) == ["job curate", "stage validate"]
    with tracing.span_under("job curate", parent):
        pass
    tracing.flush()
    resumed = [s for s in exported.get_finished_spans() if s.name == "job curate"][-1]
    assert format_trace_id(resumed.context.trace_id) == parent.split("-")[1], "a stored traceparent continues its trace"
