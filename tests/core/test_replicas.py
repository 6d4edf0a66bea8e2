"""Horizontal scaling as a cluster does it, on loopback: detection replicas on 127.0.0.1/2/3 behind
one DNS name (tests/cluster_dns.py), reached through the channel every Likeness client uses
(`core.channels`: round-robin, retries). Calls spread over the replicas; when one is killed
mid-load no call is lost and the survivor takes every call; a replica added to the DNS answer
gets calls once the others' connections reach their maximum age and the client re-resolves."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from PIL import Image

from likeness.api.v1 import common_pb2, detection_pb2, detection_pb2_grpc
from likeness.core import channels
from likeness.core.images import encode_png
from tests.cluster_dns import ClusterDns
from tests.helpers import ServiceProcess, free_port, served_calls, service_env, wait_for
from tests.photos import skimage_photo

NAME = "likeness-detection-headless.likeness.svc.cluster.local"
AGE_SECONDS = 2.0


def served(replica: ServiceProcess) -> int:
    return served_calls(replica, "Detect")  # the servers' maximum connection age: how soon a client re-resolves


@pytest.fixture
def request_pb():
    small = Image.fromarray(skimage_photo("astronaut")).resize((128, 128))
    return detection_pb2.DetectRequest(images=[common_pb2.ImageInput(data=encode_png(np.asarray(small)))])


@pytest.mark.slow
def test_calls_spread_survive_a_death_and_reach_a_new_replica(tmp_path, request_pb):
    env = service_env(LIKENESS_STORE_URI=f"file://{tmp_path}/store",
                      LIKENESS_MAX_CONNECTION_AGE_SECONDS=str(AGE_SECONDS),
                      LIKENESS_MAX_CONNECTION_AGE_GRACE_SECONDS="5")
    port = free_port()
    replicas = [ServiceProcess("detection", env, port, tmp_path / f"r{i}.log", host=f"127.0.0.{i}") for i in (1, 2, 3)]
    try:
        a, b, c = (r.wait_serving() for r in replicas)
        with ClusterDns() as dns:
            dns.set(NAME, [a.host, b.host])
            with channels.sync_channel(dns.target(NAME, port)) as channel:
                stub = detection_pb2_grpc.DetectionServiceStub(channel)
                for _ in range(40):
                    stub.Detect(request_pb, timeout=30)
                shares = [served(a) / 40, served(b) / 40]
                assert all(0.3 <= s <= 0.7 for s in shares), shares

                # b dies under load (SIGKILL: no drain); its endpoint leaves the DNS answer
                errors, done = [], threading.Event()

                def caller():
                    while not done.is_set():
                        try:
                            stub.Detect(request_pb, timeout=30)
                        except Exception as exc:  # noqa: BLE001 - any failure is a lost call
                            errors.append(exc)

                threads = [threading.Thread(target=caller) for _ in range(4)]
                for t in threads:
                    t.start()
                time.sleep(1.0)
                b.kill()
                dns.set(NAME, [a.host])
                time.sleep(1.0)
                before = served(a)
                time.sleep(2.0)
                done.set()
                for t in threads:
                    t.join(60)
                assert not errors, errors[:3]
                # the survivor takes every call within the retry policy's bound
                n = 20
                after = served(a)
                for _ in range(n):
                    stub.Detect(request_pb, timeout=30)
                assert served(a) - after == n and after > before

            # a replica joins while nothing fails (a fresh channel that knows only a): the answer
            # grows, a's connection reaches its maximum age, the client re-resolves and finds c
            with channels.sync_channel(dns.target(NAME, port)) as channel:
                stub = detection_pb2_grpc.DetectionServiceStub(channel)
                for _ in range(5):
                    stub.Detect(request_pb, timeout=30)
                dns.set(NAME, [a.host, c.host])
                t0 = time.monotonic()

                def new_replica_served():
                    stub.Detect(request_pb, timeout=30)
                    return served(c) > 0

                wait_for(new_replica_served, 30, 0.05, "a call on the replica added to the DNS answer")
                joined = time.monotonic() - t0
                print(f"added replica served after {joined:.1f} s")
                assert joined < AGE_SECONDS + 10, joined  # age + the resolver's minimum re-resolution time
    finally:
        for r in replicas:
            if r.proc.poll() is None:
                r.stop()
