"""The services an open_eyes job calls, in one process, with the model calls timed (bench/open_eyes.py).

Each service is a real gRPC server on loopback on its own event loop (tests.helpers.ServiceThread),
configured as the local stack configures its processes (likeness.client.local.stack_env), so the job runs
the same code as on `likeness up`; only the place of the processes differs.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

# The detection service's model passes: the detector, the face mesh (with its iris model) and the
# identity recognizer. Their time is kept apart per unit of work of the job (its source Detect, its
# verifying Detect), so the bench can show the job's overhead with and without them.
DETECTION_MODEL_CALLS = [
    ("likeness.detection.backends.blazeface", "BlazeFaceDetector", "detect"),
    ("likeness.detection.backends.insightface", "ScrfdDetector", "detect"),
    ("likeness.detection.backends.insightface", "ArcFaceEncoder", "embed"),
    ("likeness.detection.backends.dlib_identity", "DlibIdentityEncoder", "embed"),
    ("likeness.detection.mesh", "FaceMesh", "run"),
    ("likeness.detection.mesh", "FaceMesh", "presence"),
]


class ModelClock:
    """Seconds spent in the model calls, per job (the orchestrator runs one job at a time here)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.seconds: dict[str, float] = defaultdict(float)
        self.walls: dict[str, float] = {}  # job id -> the runner's attempt, lease to FINISHED
        self.requests: dict[str, object] = {}  # the last request a job sent, by unit-of-work kind
        self.work = ""  # the unit of work the job is waiting on (its calls are sequential)
        self._undo: list = []
        self._depth = threading.local()

    def add(self, key: str, seconds: float) -> None:
        with self.lock:
            self.seconds[key] += seconds

    def wall(self, job_id: str, wait_s: float = 10.0) -> float:
        """The runner's attempt of `job_id`: the client can see the job finished a moment before
        the runner's `_run_job` returns and records it."""
        deadline = time.monotonic() + wait_s
        while job_id not in self.walls and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.walls[job_id]

    def take(self) -> dict[str, float]:
        with self.lock:
            out, self.seconds = dict(self.seconds), defaultdict(float)
        return out

    def _patch(self, owner, name: str, replacement) -> None:
        self._undo.append((owner, name, getattr(owner, name)))
        setattr(owner, name, replacement)

    def uninstall(self) -> None:
        while self._undo:
            owner, name, original = self._undo.pop()
            setattr(owner, name, original)

    def _timed_detection(self, original):
        """`original` timed as detection model work of the current unit of work (outermost call only)."""
        clock = self

        @functools.wraps(original)
        def timed(*args, **kwargs):
            depth = getattr(clock._depth, "n", 0)
            clock._depth.n = depth + 1
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                clock._depth.n = depth
                if depth == 0:
                    clock.add(f"detection:{clock.work}", time.perf_counter() - t0)

        return timed

    def install(self) -> None:
        """Wraps the inpaint engine's run, restore_face and the restorer, the detection models, the
        runner's attempt and the job's service calls (to replay the inpaint request bare)."""
        import importlib

        from likeness.generation.engines.torch_engine import TorchEngine
        from likeness.orchestrator.context import JobContext
        from likeness.orchestrator.runner import Runner
        from likeness.restoration import outputs as restoration_outputs

        clock = self
        engine_run = TorchEngine.run

        @functools.wraps(engine_run)
        def run(self, model, refiner, key, items, *args, **kwargs):
            t0 = time.perf_counter()
            results = engine_run(self, model, refiner, key, items, *args, **kwargs)
            clock.add("inpaint", time.perf_counter() - t0)
            clock.add("phases", sum(results[0].timings[p] for p in ("text_encoding", "denoising", "decoding")))
            return results

        self._patch(TorchEngine, "run", run)
        restore_face = restoration_outputs.restore_face

        @functools.wraps(restore_face)
        def timed_restore_face(image, face, restorer, *args, **kwargs):
            t0 = time.perf_counter()
            out = restore_face(image, face, TimedRestorer(restorer, clock), *args, **kwargs)
            clock.add("restore", time.perf_counter() - t0)
            return out

        self._patch(restoration_outputs, "restore_face", timed_restore_face)
        for module, cls, method in DETECTION_MODEL_CALLS:
            owner = getattr(importlib.import_module(module), cls)
            self._patch(owner, method, self._timed_detection(getattr(owner, method)))
        run_job = Runner._run_job

        async def timed_run_job(self, job):
            t0 = time.perf_counter()
            try:
                await run_job(self, job)
            finally:
                clock.walls[job.job_id] = time.perf_counter() - t0

        self._patch(Runner, "_run_job", timed_run_job)
        call = JobContext.call

        async def recorded_call(self, client, method, request, *, work, **kwargs):
            clock.requests[work] = request
            clock.work = work
            try:
                return await call(self, client, method, request, work=work, **kwargs)
            finally:
                clock.work = ""

        self._patch(JobContext, "call", recorded_call)


class TimedRestorer:
    """The restorer, its `restore` timed; every other attribute is the restorer's own."""

    def __init__(self, restorer, clock: ModelClock):
        self._restorer, self._clock = restorer, clock

    def __getattr__(self, name):
        return getattr(self._restorer, name)

    def restore(self, face, fidelity):
        t0 = time.perf_counter()
        out = self._restorer.restore(face, fidelity)
        self._clock.add("restorer", time.perf_counter() - t0)
        return out


class InProcessStack:
    """detection, restoration, generation and the orchestrator as ServiceThreads under `state`.

    `model` is the generation model the jobs use; with `model_dir`, its folder there is linked into
    the stack's model repository (next to the tiny models the service builds), so a large model is
    used where it lies. `threads` (torch intra-op threads) and `dtype` go to the generation service."""

    def __init__(self, state: Path, clock: ModelClock, model: str = "tiny-sdxl", model_dir: Path | None = None,
                 threads: int = 1, dtype: str = "auto"):
        self.state, self.clock, self.model = state, clock, model
        self.model_dir, self.threads_per_call, self.dtype = model_dir, threads, dtype
        self.threads: list = []

    def __enter__(self):
        from likeness.client.local import stack_env
        from likeness.core.settings import CommonSettings
        from likeness.core.store import open_store

        if self.model_dir is not None:
            (self.state / "models").mkdir(parents=True, exist_ok=True)
            (self.state / "models" / self.model).symlink_to((self.model_dir / self.model).resolve())
        os.environ.update(stack_env(self.state, extra={
            "LIKENESS_DRAIN_SECONDS": "0", "LIKENESS_GENERATION_CPU_THREADS": str(self.threads_per_call),
            "LIKENESS_GENERATION_DTYPE": self.dtype, "LIKENESS_GENERATION_IDLE_UNLOAD_SECONDS": "0"}))
        self.clock.install()
        addresses = {name: self._start(name) for name in ("detection", "restoration", "generation")}
        for name, address in addresses.items():
            os.environ[f"LIKENESS_ORCHESTRATOR_{name.upper()}_ADDRESS"] = address
        self.orchestrator = self._start("orchestrator")
        self.store = open_store(CommonSettings())
        from likeness.api.v1 import generation_pb2_grpc
        from likeness.client.jobs_client import JobsClient

        self.jobs = JobsClient(self.orchestrator)
        self._generation_channel = self.threads[2].channel()
        self.generation = generation_pb2_grpc.GenerationServiceStub(self._generation_channel)
        return self

    def _start(self, name: str) -> str:
        import importlib

        from tests.helpers import ServiceThread

        app = importlib.import_module(f"likeness.{name}.app")
        settings_module = importlib.import_module(f"likeness.{name}.settings")
        settings_cls = getattr(settings_module, f"{name.capitalize()}Settings")
        settings = settings_cls(port=0, metrics_enabled=False)
        thread = ServiceThread(app.create_service(settings), settings).__enter__()
        self.threads.append(thread)
        return thread.address

    def __exit__(self, *exc):
        self.jobs.close()
        self._generation_channel.close()
        for thread in reversed(self.threads):
            thread.__exit__(None, None, None)
        self.clock.uninstall()

    def _source(self, photo, n: int) -> str:
        """A new image for every job: neither the detection service's cache nor the job store's
        finished work (shared by jobs, by request) answers its Detect."""
        from likeness.core.images import encode_png

        img = photo.copy()
        img[0, 0] = (n * 37 % 256, n * 11 % 256, n % 256)
        img[0, 1] = (n // 256 % 256, 0, 0)
        return self.store.put(f"bench-inputs/astronaut-{n}.png", encode_png(img), "image/png").uri

    def open_eyes(self, photo, n: int, *, restore: bool, variations: int, steps: int, model: str = "") -> dict:
        """Job number `n` (its own source image and seed) on `model` (default: the stack's): its walls,
        model seconds and stage seconds."""
        from likeness.api.v1 import common_pb2
        from likeness.api.v1 import orchestrator_pb2 as o

        spec = o.OpenEyesSpec(image=common_pb2.ImageInput(uri=self._source(photo, n)), model=model or self.model,
                              seed=100 * n, variations=variations, steps=steps, restore=restore)
        self.clock.take()
        t0 = time.perf_counter()
        job = self.jobs.follow(self.jobs.submit(o.JobSpec(open_eyes=spec)).job_id, quiet=True)
        client = time.perf_counter() - t0
        if job.state != o.JOB_STATE_SUCCEEDED:
            raise RuntimeError(f"open_eyes job {job.job_id} ended {o.JobState.Name(job.state)}: {job.error}")
        wall = self.clock.wall(job.job_id)
        model = self.clock.take()
        out = {"wall": wall, "client": client, **{k: model.get(k, 0.0) for k in ("inpaint", "phases", "restore",
                                                                                   "restorer")}}
        out["overhead"] = wall - out["inpaint"] - out["restore"]
        # detection model passes per unit of work ("detect": the source, "verify": the variations)
        out["detection"] = {k.removeprefix("detection:"): v for k, v in model.items() if k.startswith("detection:")}
        out["overhead_less_detection"] = out["overhead"] - sum(out["detection"].values())
        out["stages"] = {k.removeprefix("seconds_"): float(v) for k, v in job.summary.items()
                         if k.startswith("seconds_")}
        return out

    def load_model(self) -> None:
        """The jobs' model loaded (and its weights verified) by one 1-step 64 px text-to-image call,
        so that no job pays for it."""
        from likeness.api.v1 import generation_pb2

        req = generation_pb2.GenerateRequest(model=self.model, task=generation_pb2.TASK_TEXT_TO_IMAGE, prompt="warm",
                                             steps=1, width=64, height=64, output_prefix="bench-warm/")
        self.generation.Generate(req, timeout=3600)
        self.clock.take()

    def bare_inpaint(self, photo, r: int, *, variations: int, steps: int) -> dict:
        """The job's last inpaint request, sent again with a new seed straight to generation: its
        client wall and the engine's run (`inpaint`), whose difference is one service call's own cost."""
        from likeness.api.v1 import generation_pb2

        req = generation_pb2.GenerateRequest()
        req.CopyFrom(self.clock.requests["inpaint"])
        req.seed = 100 * r + 7  # never a job's: 100 * n + variation < 100 * n + 16
        req.output_prefix = f"bench-bare/{r}/"
        self.clock.take()
        t0 = time.perf_counter()
        self.generation.Generate(req, timeout=3600)
        client = time.perf_counter() - t0
        return {"client": client, **self.clock.take()}


@contextmanager
def png_level(level: int):
    """Every PNG this process writes (services, job, report) at zlib `level` while inside."""
    from likeness.core import images

    saved = images.encode_png.__defaults__, images.encode_mask_png.__defaults__
    images.encode_png.__defaults__ = (None, None, level)
    images.encode_mask_png.__defaults__ = (level,)
    try:
        yield
    finally:
        images.encode_png.__defaults__, images.encode_mask_png.__defaults__ = saved
