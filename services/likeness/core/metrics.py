"""Every Prometheus metric Likeness exports, defined once so the chart's rules and dashboard, the
services and the tests agree on names. Histograms, not summaries: p95 must aggregate across pods.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# 1 ms .. 10 min: unary detection calls sit at the bottom, training RPCs and SDXL batches at the top.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                   30.0, 60.0, 120.0, 300.0, 600.0)

RPC_DURATION = Histogram(
    "likeness_rpc_duration_seconds", "Server-side duration of gRPC calls (streams: until the last message).",
    ["service", "method", "code"], buckets=LATENCY_BUCKETS)
RPC_IN_FLIGHT = Gauge(
    "likeness_rpc_in_flight", "gRPC calls being served now.", ["service", "method"])
SERVICE_READY = Gauge(
    "likeness_service_ready", "1 when the service reports SERVING (warm), else 0.", ["service"])

STAGE_DURATION = Histogram(
    "likeness_stage_duration_seconds", "Duration of one job stage.", ["job_kind", "stage"],
    buckets=LATENCY_BUCKETS)
ITEMS = Counter(
    "likeness_items_total", "Work items by outcome (kept, rejected_<reason>, failed, cached).",
    ["service", "stage", "outcome"])
JOBS = Gauge("likeness_jobs", "Jobs in the job store by kind and state.", ["kind", "state"])

BATCH_SIZE = Histogram(
    "likeness_batch_size", "Images per pipeline call after dynamic batching.", ["model"],
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32))
BATCH_HOLD = Counter(
    "likeness_batch_hold_seconds_total",
    "Seconds the model worker stood free while requests waited in the batching queue for batch-mates.",
    ["service"])
QUEUE_DEPTH = Gauge("likeness_queue_depth", "Requests waiting in a batching queue.", ["service", "model"])
QUEUE_CAPACITY = Gauge("likeness_queue_capacity", "Bound of a batching queue.", ["service", "model"])
GENERATION_PHASE = Histogram(
    "likeness_generation_phase_seconds", "Generation time per phase (text_encoding, denoising, decoding).",
    ["model", "phase"], buckets=LATENCY_BUCKETS)
MODEL_MEMORY = Gauge(
    "likeness_model_memory_bytes", "Memory held by loaded models.", ["service", "model", "device"])
GPU_MEMORY = Gauge("likeness_gpu_memory_bytes", "GPU memory allocated by this process.", ["device"])
GENERATION_ENGINE_BATCHES = Counter(
    "likeness_generation_engine_batches_total",
    "Generation batches by the path that ran them: onnx, or torch:<reason> (adapters, reference_image, "
    "outside_profile) on the onnxruntime engine.", ["model", "path"])
