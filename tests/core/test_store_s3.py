"""S3 backend specifics against a real SeaweedFS server: multipart, foreign buckets, retries, auth."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import threading
import time
import uuid

import pytest

from likeness.core.errors import InvalidArgument, PermissionDenied, Unavailable
from likeness.core.store import open_store
from likeness.core.store_s3 import S3Store, _is_transient
from tests.helpers import free_port

pytestmark = pytest.mark.s3


def fresh_root(bucket: str = "s3tests") -> str:
    return f"s3://{bucket}/t-{uuid.uuid4().hex[:8]}"


def test_multipart_object_of_21_mb(seaweed, tmp_path):
    store = open_store(seaweed.settings("s3tests"), fresh_root())
    data = os.urandom(21 * 1024 * 1024)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    obj = store.put_file("model/unet.safetensors", src)
    assert obj.size == len(data) and obj.sha256 == hashlib.sha256(data).hexdigest()
    # A multipart upload's ETag is "<md5 of part md5s>-<part count>".
    etag = seaweed.client().stat_object(store.bucket, store.object_name("model/unet.safetensors")).etag
    assert etag.endswith("-2"), etag
    assert store.stat(obj.uri) == obj  # sha256 came back from the object metadata
    got = store.get_to_file(obj.uri, tmp_path / "back.bin")
    assert got.sha256 == obj.sha256
    assert (tmp_path / "back.bin").read_bytes() == data


def test_open_creates_missing_bucket(seaweed):
    bucket = f"fresh-{uuid.uuid4().hex[:8]}"
    assert not seaweed.client().bucket_exists(bucket)
    store = open_store(seaweed.settings(bucket))
    assert seaweed.client().bucket_exists(bucket)
    assert store.root_uri == f"s3://{bucket}"
    store.put("a", b"1")
    assert store.list() == ["a"]


def test_reads_from_allowed_buckets_only(seaweed):
    client = seaweed.client()
    if not client.bucket_exists("partner-inputs"):
        client.make_bucket("partner-inputs")
    data = b"written by another system, without our sha256 metadata"
    client.put_object("partner-inputs", "faces/1.jpg", io.BytesIO(data), len(data), content_type="image/jpeg")
    uri = "s3://partner-inputs/faces/1.jpg"

    closed = open_store(seaweed.settings("s3tests"), fresh_root())
    with pytest.raises(InvalidArgument, match="bucket 'partner-inputs' is not allowed"):
        closed.get(uri, field="images[0].uri")

    store = open_store(seaweed.settings("s3tests", allowed_buckets="partner-inputs, other"), fresh_root())
    assert store.get(uri) == data
    info = store.stat(uri)  # computed from the bytes, since the writer recorded none
    assert (info.sha256, info.size, info.media_type) == (
        hashlib.sha256(data).hexdigest(),
        len(data),
        "image/jpeg",
    )
    with pytest.raises(InvalidArgument, match="outside the store root"):
        store.delete(uri)  # foreign objects are read-only
    with pytest.raises(InvalidArgument, match="outside the store root"):
        store.key_of(uri)


def test_wrong_credentials_are_permission_denied_without_leaking_secrets(seaweed):
    settings = seaweed.settings("s3tests", s3_secret_key="wrong-secret-value")
    with pytest.raises(PermissionDenied) as err:
        open_store(settings, fresh_root()).put("x", b"1")
    assert "wrong-secret-value" not in str(err.value)
    assert "wrong-secret-value" not in repr(settings)


class _DelayedProxy:
    """Refuses connections (nothing listens) until `open()`, then forwards TCP to `target`;
    with `cut_after`, the first connection is dropped after that many bytes from the server."""

    def __init__(self, target_port: int, cut_after: int | None = None):
        self.port = free_port()
        self._target = target_port
        self._server: socket.socket | None = None
        self._cut_after = cut_after
        self.connections = 0

    def open(self) -> None:
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            self.connections += 1
            limit = self._cut_after if self.connections == 1 else None
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, limit), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, limit: int | None = None) -> None:
        sent = 0
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                sent += len(data)
                if limit is not None and sent >= limit:
                    break  # simulate a connection lost mid-response
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        if self._server:
            self._server.close()


def test_retries_while_the_server_is_down_then_succeeds(seaweed):
    store = open_store(seaweed.settings("s3tests"), fresh_root())  # bucket exists from here on
    proxy = _DelayedProxy(seaweed.s3_port)
    settings = seaweed.settings("s3tests", s3_endpoint=f"127.0.0.1:{proxy.port}", store_retry_seconds=20)
    timer = threading.Timer(1.5, proxy.open)
    timer.start()
    try:
        start = time.monotonic()
        # Connection refused for ~1.5 s (bucket check and put both go through the proxy).
        late = open_store(settings, store.root_uri)
        late.put("after-outage", b"ok")
        elapsed = time.monotonic() - start
    finally:
        timer.cancel()
        proxy.close()
    assert 1.0 < elapsed < 15, elapsed
    assert store.get("after-outage") == b"ok"


def test_gives_up_after_the_retry_budget_with_unavailable():
    # Nothing listens on the port: every attempt is refused until the 1 s budget is spent.
    from likeness.core.settings import CommonSettings

    port = free_port()
    settings = CommonSettings(
        s3_endpoint=f"127.0.0.1:{port}", s3_access_key="k", s3_secret_key="s", store_retry_seconds=1.0
    )
    start = time.monotonic()
    with pytest.raises(Unavailable) as err:
        S3Store.from_settings("nobucket", "", settings)
    elapsed = time.monotonic() - start
    assert 0.5 < elapsed < 5, elapsed
    assert f"127.0.0.1:{port}" in str(err.value) and "retry limit 1s" in str(err.value)
    assert err.value.code == "UNAVAILABLE"


def test_transient_classification():
    import urllib3
    from minio.error import ServerError

    assert _is_transient(ServerError("boom", 503))
    assert not _is_transient(ServerError("not modified", 304))
    assert _is_transient(urllib3.exceptions.NewConnectionError(None, "refused"))
    assert _is_transient(ConnectionResetError())
    assert not _is_transient(ValueError("bad"))


def test_download_cut_mid_stream_is_restarted(seaweed, tmp_path):
    store = open_store(seaweed.settings("s3tests"), fresh_root())
    data = os.urandom(4 * 1024 * 1024)
    store.put("weights.bin", data)
    proxy = _DelayedProxy(seaweed.s3_port, cut_after=1024 * 1024)
    proxy.open()
    try:
        flaky = open_store(seaweed.settings("s3tests", s3_endpoint=f"127.0.0.1:{proxy.port}"), store.root_uri)
        got = flaky.get_to_file("weights.bin", tmp_path / "w.bin")
    finally:
        proxy.close()
    assert proxy.connections >= 2  # the first connection was cut, the download restarted
    assert got.sha256 == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "w.bin").read_bytes() == data
    assert [p.name for p in tmp_path.iterdir()] == ["w.bin"]


@pytest.mark.slow
def test_server_restart_during_a_write_is_ridden_out(tmp_path):
    """The S3 server process is stopped for ~3 s and restarted (same port, same data)."""
    from tests.servers import SeaweedServer

    server = SeaweedServer(tmp_path)
    server.start()
    try:
        store = open_store(server.settings("restart", store_retry_seconds=30), "s3://restart")
        store.put("before", b"kept across the restart")
        server.stop()
        timer = threading.Timer(3.0, server.start)
        timer.start()
        start = time.monotonic()
        store.put("during", b"written while the server was down")
        elapsed = time.monotonic() - start
        timer.join()
        assert elapsed > 2.5, elapsed
        assert store.get("before") == b"kept across the restart"
        assert store.get("during") == b"written while the server was down"
    finally:
        server.stop()
