"""A real OTLP/gRPC trace receiver built from opentelemetry-proto: what a collector (Tempo, Jaeger,
the OpenTelemetry Collector) does on port 4317, minus storage. The services export to it with the
same OTLP exporter they use in a cluster.

    python -m tests.tracing.otlp_receiver   # prints its port, then a span count on SIGTERM (bench/runtime.py)
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict
    status_code: int  # 0 unset, 1 ok, 2 error
    sampled: bool


def _attributes(kvs) -> dict:
    out = {}
    for kv in kvs:
        which = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, which) if which else None
    return out


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self):
        self._spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        self.server = grpc.server(ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def Export(self, request, context):
        got = []
        for rs in request.resource_spans:
            service = _attributes(rs.resource.attributes).get("service.name", "")
            for ss in rs.scope_spans:
                for s in ss.spans:
                    got.append(ReceivedSpan(service, s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(),
                                            _attributes(s.attributes), s.status.code, bool(s.flags & 0x1)))
        with self._lock:
            self._spans.extend(got)
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self, trace_id: str | None = None) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self._spans if trace_id is None or s.trace_id == trace_id]

    def wait_for(self, predicate, timeout: float = 20.0) -> list[ReceivedSpan]:
        """The received spans once `predicate(spans)` holds; AssertionError naming what came after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if predicate(spans):
                return spans
            if time.monotonic() > deadline:
                names = sorted({(s.service, s.name) for s in spans})
                raise AssertionError(f"spans received after {timeout:.0f}s do not satisfy the check: {names}")
            time.sleep(0.1)

    def stop(self) -> None:
        self.server.stop(0)


def main() -> None:
    receiver = OtlpReceiver()
    print(receiver.port, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    print(len(receiver.spans()), flush=True)
    receiver.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
