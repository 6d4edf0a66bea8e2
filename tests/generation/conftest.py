"""One generation service (tiny-sdxl, torch engine) per test session, in-process over gRPC."""

from __future__ import annotations

import pytest


def make_settings(root, **overrides):
    from likeness.generation.settings import GenerationSettings

    values = dict(store_uri=f"file://{root}/store", model_repository=str(root / "models"),
                  model_cache_dir=str(root / "cache"), metrics_enabled=False, port=0, host="127.0.0.1",
                  generation_keep_warm="tiny-sdxl", generation_max_batch=4, generation_max_wait_ms=150,
                  generation_queue_capacity=12, generation_idle_unload_seconds=0,
                  generation_cpu_threads=1)
    values.update(overrides)
    return GenerationSettings(**values)


@pytest.fixture(scope="session")
def gen_root(tmp_path_factory):
    return tmp_path_factory.mktemp("generation")


@pytest.fixture(scope="session")
def service(gen_root):
    """(ServiceThread, GenerationServiceStub, store) of a warm service."""
    import torch

    from likeness.api.v1 import generation_pb2_grpc
    from likeness.core.store import open_store
    from likeness.generation.app import create_service
    from tests.helpers import ServiceThread

    threads = torch.get_num_threads()  # the engine sets 1 (process-wide); later tests get theirs back
    settings = make_settings(gen_root)
    try:
        with ServiceThread(create_service(settings), settings) as thread, thread.channel() as channel:
            yield thread, generation_pb2_grpc.GenerationServiceStub(channel), open_store(settings)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def onnx_service(gen_root, service):
    """(ServiceThread, stub, store) of a warm onnxruntime-engine service sharing `service`'s model
    repository and store (requests give their own output_prefix: work ids do not name the engine)."""
    import torch

    from likeness.api.v1 import generation_pb2_grpc
    from likeness.core.store import open_store
    from likeness.generation.app import create_service
    from tests.helpers import ServiceThread

    threads = torch.get_num_threads()
    settings = make_settings(gen_root, generation_engine="onnxruntime",
                             generation_engine_cache_dir=str(gen_root / "engine-cache"))
    try:
        with ServiceThread(create_service(settings), settings) as thread, thread.channel() as channel:
            yield thread, generation_pb2_grpc.GenerationServiceStub(channel), open_store(settings)
    finally:
        torch.set_num_threads(threads)


def engine_of(thread):
    return thread.runtime.service.servicers[0][1]._generator.manager.engine
