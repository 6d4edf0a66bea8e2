"""Starting the SERVER span of a call with less work per call than the SDK's `Tracer.start_span`.

Every traced call starts a span with the same name, kind and four `rpc.*` attributes as the previous
call of its method. `Tracer.start_span` redoes all of it per call: it cleans and copies the
attributes one by one, builds bounded lists and locks, and runs through ~100 Python function calls.
Measured in situ (bench/runtime.py's servers, one process, calls rotating between servers) that code
runs cold and costs 60-80 us of CPU per call on the shared 2-core machine, 3-4x what it takes in a
tight loop: most of what tracing added to an empty call (docs/benchmarks.md).

`FastServerSpans.start` makes the same SDK span (`opentelemetry.sdk.trace.Span`: every method,
`end` and the export are the SDK's own) with the per-method parts prepared once: the attributes are
cleaned once and copied per call, the sampler and id generator are the tracer's, so the sampling
decision, ids, flags, parent, resource, scope and limits are what `start_span` would give.
It fills the span's fields itself, so it depends on the SDK version (pinned in pyproject.toml);
tests/tracing/test_fast_span.py compares its spans field by field with `start_span`'s.
"""

from __future__ import annotations

import logging
import threading
from random import getrandbits
from time import time_ns

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import _RUNTIME_CONTEXT
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace import SynchronousMultiSpanProcessor, _check_span_ended, sampling
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace._tracer_metrics import NoOpTracerMetrics
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation import _SPAN_KEY as SPAN_KEY

from likeness.core.tracing_sampling import RecordUnsampled

_sdk_log = logging.getLogger("opentelemetry.sdk.trace")  # where the SDK warns of a second end
_UNSET = Status(StatusCode.UNSET)
_TRACE_ID_LIMIT = (1 << 64) - 1
# trace flags by (sampled, random trace id), as start_span builds them
_FLAGS = {(sampled, rand): TraceFlags((TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
                                      | (TraceFlags.RANDOM_TRACE_ID if rand else 0))
          for sampled in (False, True) for rand in (False, True)}
_DEFAULT_DELEGATES = (sampling.ALWAYS_ON, sampling.ALWAYS_OFF, sampling.ALWAYS_ON, sampling.ALWAYS_OFF)


class _ServerSpan(SdkSpan):
    """An SDK span whose fields FastServerSpans.start fills (Span.__init__ is not called). Two
    differences in how, none in what it records: no event or link lists until one is added (most calls
    add none), and `end` hands the span itself to the processors (ended, it no longer changes) where
    the SDK hands them a copy."""

    _events = _links = ()

    @_check_span_ended
    def _add_event(self, event) -> None:
        if not isinstance(self._events, BoundedList):
            self._events = BoundedList(self._limits.max_events)
        self._events.append(event)

    @_check_span_ended
    def _add_link(self, link) -> None:
        if not isinstance(self._links, BoundedList):
            self._links = BoundedList(self._limits.max_links)
        self._links.append(link)

    def get_span_context(self) -> SpanContext:
        return self._context

    def end(self, end_time: int | None = None) -> None:
        with self._lock:
            if self._end_time is not None:
                _sdk_log.warning("Calling end() on an ended span.")
                return
            self._end_time = end_time if end_time is not None else time_ns()
            self._attributes._immutable = True  # noqa: SLF001
        hooks = self._hooks
        if hooks is None:
            self._span_processor._on_ending(self)  # noqa: SLF001
            self._span_processor.on_end(self)
            return
        for ending in hooks.ending:
            ending(self)
        for end in hooks.end:
            end(self)


# The span processors whose on_start and _on_ending do nothing (those of the pinned SDK's BatchSpanProcessor
# and SimpleSpanProcessor): a span skips those calls.
_QUIET_START = (BatchSpanProcessor, SimpleSpanProcessor)


class _Hooks:
    """The processor methods a span calls, taken once from the processors behind the provider's
    multi-processor (whose tuple is replaced when one is added, so a new tuple means new hooks)."""

    __slots__ = ("processors", "start", "ending", "end")

    def __init__(self, processors: tuple):
        self.processors = processors
        self.start = tuple(p.on_start for p in processors if type(p) not in _QUIET_START)
        self.ending = tuple(p._on_ending for p in processors if type(p) not in _QUIET_START)  # noqa: SLF001
        self.end = tuple(p.on_end for p in processors)


def fast_path_supported(tracer) -> bool:
    """Whether `tracer` is an SDK tracer whose `start_span` FastServerSpans reproduces: enabled and
    without the SDK's own span metrics (OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED)."""
    return (isinstance(tracer, SdkTracer) and tracer._is_enabled()  # noqa: SLF001
            and isinstance(getattr(tracer, "_tracer_metrics", None), NoOpTracerMetrics))


def ratio_bound(sampler) -> tuple[int | None, bool]:
    """(bound, record_unsampled) when `sampler` is the parent-based ratio sampler of
    tracing_sampling.sampler_for (the SDK's ParentBased with its default delegates and a
    TraceIdRatioBased or constant root, maybe inside RecordUnsampled): a call then follows its parent's
    sampled flag, and a new trace is sampled when the low 64 bits of its id are below `bound`.
    (None, False) for any other sampler, which is then asked for every span."""
    record_unsampled = isinstance(sampler, RecordUnsampled)
    if record_unsampled:
        sampler = sampler.inner
    if not isinstance(sampler, sampling.ParentBased) or type(sampler).should_sample is not \
            sampling.ParentBased.should_sample:
        return None, False
    delegates = (sampler._remote_parent_sampled, sampler._remote_parent_not_sampled,  # noqa: SLF001
                 sampler._local_parent_sampled, sampler._local_parent_not_sampled)  # noqa: SLF001
    root = sampler._root  # noqa: SLF001
    if any(a is not b for a, b in zip(delegates, _DEFAULT_DELEGATES, strict=True)):
        return None, False
    if type(root) is sampling.TraceIdRatioBased:
        return root.bound, record_unsampled
    if root is sampling.ALWAYS_ON or root is sampling.ALWAYS_OFF:
        return (_TRACE_ID_LIMIT + 1 if root is sampling.ALWAYS_ON else 0), record_unsampled
    return None, False


class FastServerSpans:
    """Starts the SERVER spans named `name` with `attributes` for an SDK tracer (see the module)."""

    __slots__ = ("name", "attributes", "_template", "sampler", "bound", "record_unsampled", "ids", "random_ids", "random_root",
                 "processor", "hooks", "resource", "scope", "info", "limits")

    def __init__(self, tracer: SdkTracer, name: str, attributes: dict):
        limits = tracer._span_limits  # noqa: SLF001
        self.name, self.attributes, self.limits = name, attributes, limits
        # cleaned once, as Span.__init__ would clean them for every call
        self._template = BoundedAttributes(limits.max_span_attributes, attributes, immutable=True,
                                           max_value_len=limits.max_span_attribute_length)
        self.sampler, self.ids, self.processor = tracer.sampler, tracer.id_generator, tracer.span_processor
        self.hooks = None
        self.bound, self.record_unsampled = ratio_bound(tracer.sampler)
        self.random_root = self.ids.is_trace_id_random()
        # the SDK's generator draws ids from the random module (0, the invalid id, is drawn again)
        self.random_ids = type(self.ids) is RandomIdGenerator
        self.resource, self.info = tracer.resource, tracer.instrumentation_info
        self.scope = tracer._instrumentation_scope  # noqa: SLF001

    def start(self, context=None) -> trace.Span:
        """What `tracer.start_span(name, context, kind=SERVER, attributes=attributes)` returns."""
        current = (context if context is not None else _RUNTIME_CONTEXT.get_current()).get(SPAN_KEY)
        # get_current_span; most calls have no span in their context (None: no ABC isinstance check)
        parent = current.get_span_context() if current is not None and isinstance(current, trace.Span) else None
        if parent is not None and not parent.is_valid:
            parent = None
        if parent is not None:
            trace_id = parent.trace_id
        elif self.random_ids:  # RandomIdGenerator.generate_trace_id, one call less
            trace_id = getrandbits(128) or self.ids.generate_trace_id()
        else:
            trace_id = self.ids.generate_trace_id()
        if self.bound is None:
            result = self.sampler.should_sample(context, trace_id, self.name, SpanKind.SERVER, self.attributes, ())
            sampled, recording = result.decision.is_sampled(), result.decision.is_recording()
            given, trace_state = result.attributes, result.trace_state
        else:  # what the ratio sampler decides, without its five calls
            sampled = parent.trace_flags.sampled if parent is not None else trace_id & _TRACE_ID_LIMIT < self.bound
            recording = sampled or self.record_unsampled
            given, trace_state = self.attributes, None if parent is None else parent.trace_state
        flags = _FLAGS[sampled, self.random_root if parent is None else parent.trace_flags.random_trace_id]
        span_id = (getrandbits(64) or self.ids.generate_span_id()) if self.random_ids else self.ids.generate_span_id()
        span_context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=flags,
                                   trace_state=trace_state)
        if not recording:
            return trace.NonRecordingSpan(span_context)
        span = object.__new__(_ServerSpan)
        span._name, span._context, span._parent, span._kind = self.name, span_context, parent, SpanKind.SERVER
        span._resource, span._instrumentation_info, span._instrumentation_scope = self.resource, self.info, self.scope
        span._end_time, span._status = None, _UNSET
        span._attributes = self._attributes(given)
        span._sampler, span._trace_config, span._span_processor = self.sampler, None, self.processor
        span._record_exception = span._set_status_on_exception = True
        span._limits, span._lock, span._record_end_metrics = self.limits, threading.Lock(), None
        span._hooks = hooks = self._current_hooks()
        span._start_time = time_ns()
        if hooks is None:
            self.processor.on_start(span, parent_context=context)
        else:
            for start in hooks.start:
                start(span, parent_context=context)
        return span

    def _current_hooks(self) -> _Hooks | None:
        """Hooks of the processors now behind the tracer's; None for another kind of multi-processor
        (its on_start, _on_ending and on_end are then called as the SDK calls them)."""
        if type(self.processor) is not SynchronousMultiSpanProcessor:
            return None
        processors = self.processor._span_processors  # noqa: SLF001
        if self.hooks is None or self.hooks.processors is not processors:
            self.hooks = _Hooks(processors)
        return self.hooks

    def _attributes(self, given) -> BoundedAttributes:
        """The span's attributes: those the sampler hands back, as Span.__init__ would store them.
        For the SDK's samplers that is the attributes we gave it: then a writable copy of the
        template, cleaned once."""
        template = self._template
        if given is not self.attributes and given != self.attributes:
            return BoundedAttributes(template.maxlen, given, immutable=False, max_value_len=template.max_value_len)
        # values already cleaned, so filled as __deepcopy__ fills a copy, without __init__'s checks
        copy = object.__new__(BoundedAttributes)
        copy.maxlen, copy.dropped, copy.max_value_len = template.maxlen, 0, template.max_value_len
        copy._dict, copy._lock, copy._immutable = dict(template._dict), threading.Lock(), False  # noqa: SLF001
        return copy
