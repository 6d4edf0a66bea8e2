"""Sampling that keeps failed and slow calls.

The Python SDK samples when a span starts; a span it drops records nothing and cannot be exported
later. So to keep the calls that fail or are slow among those the ratio did not sample,
`RecordUnsampled` records them anyway (decision RECORD_ONLY: the cost of recording, no export) and
`KeepSlowAndFailed` holds their spans per local root (the server span of a call, or a job attempt's
span) until that root ends: failed or slow, the root and all its children are exported, marked
sampled; otherwise they are dropped. The decision is per process (each service decides for its own
part of a trace).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, sampling
from opentelemetry.trace import SpanContext, StatusCode, TraceFlags


def sampler_for(ratio: float, record_unsampled: bool = False) -> sampling.Sampler:
    """Parent-based: a call follows its caller's decision; a new trace is sampled with `ratio`."""
    base = sampling.ParentBased(root=sampling.TraceIdRatioBased(ratio))
    return RecordUnsampled(base) if record_unsampled and ratio < 1.0 else base


class RecordUnsampled(sampling.Sampler):
    """A sampler that turns the DROP decisions of `inner` into RECORD_ONLY, so that a span which is
    not sampled still records what KeepSlowAndFailed needs to export it after all."""

    def __init__(self, inner):
        self.inner = inner

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None,
                      trace_state=None):
        result = self.inner.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)
        if result.decision is sampling.Decision.DROP:
            # the span's own attributes: a DROP result carries none, and a kept span needs them
            return sampling.SamplingResult(sampling.Decision.RECORD_ONLY, attributes, result.trace_state)
        return result

    def get_description(self) -> str:
        return f"RecordUnsampled{{{self.inner.get_description()}}}"


class KeepSlowAndFailed(SpanProcessor):
    """Span processor: sampled spans go to `export` as usual; spans recorded but not sampled are held
    per local root and exported (marked sampled) when that root ends with an error or after
    `slower_than` seconds, else dropped. Bounded: at most `max_roots` roots of `max_spans` spans."""

    def __init__(self, export, keep_errors: bool, slower_than: float, max_roots: int = 512, max_spans: int = 2000):
        self.export, self.keep_errors, self.slower_than_ns = export, keep_errors, int(slower_than * 1e9)
        self.max_roots, self.max_spans = max_roots, max_spans
        self._root_of: dict[int, int] = {}  # span id -> local root span id, for open unsampled spans
        self._held: OrderedDict[int, list] = OrderedDict()  # local root span id -> ended spans
        self._lock = threading.Lock()

    def keeps(self, failed: bool, seconds: float) -> bool:
        return (self.keep_errors and failed) or (0 < self.slower_than_ns <= seconds * 1e9)

    def on_start(self, span, parent_context=None) -> None:
        if span.context.trace_flags.sampled:
            return
        parent = span.parent
        with self._lock:
            root = span.context.span_id if parent is None or parent.is_remote else \
                self._root_of.get(parent.span_id, parent.span_id)
            self._root_of[span.context.span_id] = root

    def on_end(self, span) -> None:
        if span.context.trace_flags.sampled:
            self.export.on_end(span)
            return
        span_id = span.context.span_id
        with self._lock:
            root = self._root_of.pop(span_id, span_id)
            if root != span_id:
                held = self._held.get(root)
                if held is None:
                    if len(self._held) >= self.max_roots:
                        self._held.popitem(last=False)
                    held = self._held[root] = []
                if len(held) < self.max_spans:
                    held.append(span)
                return
            held = self._held.pop(root, [])
        failed = span.status.status_code is StatusCode.ERROR
        if self.keeps(failed, (span.end_time - span.start_time) / 1e9):
            for s in (*held, span):
                self.export.on_end(_as_sampled(s))

    def shutdown(self) -> None:
        self.export.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.export.force_flush(timeout_millis)


def _as_sampled(span: ReadableSpan) -> ReadableSpan:
    c = span.context
    ctx = SpanContext(c.trace_id, c.span_id, c.is_remote, TraceFlags(TraceFlags.SAMPLED), c.trace_state)
    return ReadableSpan(name=span.name, context=ctx, parent=span.parent, resource=span.resource,
                        attributes=span.attributes, events=span.events, links=span.links, kind=span.kind,
                        instrumentation_scope=span.instrumentation_scope, status=span.status,
                        start_time=span.start_time, end_time=span.end_time)
