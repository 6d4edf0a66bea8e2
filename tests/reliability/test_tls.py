"""TLS and mutual TLS between a client and a real service process, with certificates made here by
the openssl CLI (a throwaway CA, a server certificate for 127.0.0.1, client certificates from that
CA and from a foreign one). The client side is `likeness.core.channels.sync_channel`, the code every
service-to-service call uses; the server side is the runtime's `server_credentials`, both driven by
LIKENESS_TLS_CERT_FILE / _KEY_FILE / _CA_FILE (mounted Secrets in the chart).

- TLS (cert + key on the server): a client trusting the CA is served; a plaintext client and a
  client trusting another CA are refused (UNAVAILABLE: the handshake fails, no request is read).
- mTLS (CA set on the server too): only clients presenting a certificate from that CA are served.
- The server's message-size limit (LIKENESS_MAX_MESSAGE_BYTES) holds over TLS: RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest

from likeness.api.v1 import embedding_pb2, embedding_pb2_grpc
from likeness.core.channels import sync_channel
from likeness.core.settings import CommonSettings
from tests.helpers import ServiceProcess, service_env, wait_for

LIMIT = 2 * 1024 * 1024


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN={name}", cwd=d)


def make_cert(d: Path, name: str, ca: str, usage: str) -> None:
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    (d / f"{name}.ext").write_text(f"subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-days", "1", "-out", f"{name}.crt", "-extfile", f"{name}.ext", cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    make_ca(d, "ca")
    make_ca(d, "other-ca")
    make_cert(d, "server", "ca", "serverAuth")
    make_cert(d, "client", "ca", "clientAuth")
    make_cert(d, "intruder", "other-ca", "clientAuth")
    return d


def start_embedding(pki: Path, tmp_path: Path, mutual: bool) -> ServiceProcess:
    env = service_env(LIKENESS_TLS_CERT_FILE=pki / "server.crt", LIKENESS_TLS_KEY_FILE=pki / "server.key",
                      LIKENESS_MAX_MESSAGE_BYTES=LIMIT, LIKENESS_DRAIN_SECONDS=0,
                      LIKENESS_MODEL_REPOSITORY=f"file://{tmp_path}/models",
                      LIKENESS_MODEL_CACHE_DIR=tmp_path / "cache",
                      LIKENESS_STORE_URI=f"file://{tmp_path}/store",
                      **({"LIKENESS_TLS_CA_FILE": pki / "ca.crt"} if mutual else {}))
    proc = ServiceProcess("embedding", env, log_path=tmp_path / "embedding.log")
    client = settings(pki, cert="client")

    def serving() -> bool:
        if proc.proc.poll() is not None:
            raise RuntimeError((tmp_path / "embedding.log").read_text()[-3000:])
        return outcome(client, proc.address) == "OK"

    wait_for(serving, 300, 0.5, "embedding SERVING over TLS")
    return proc


def settings(pki: Path, ca: str = "ca", cert: str | None = None) -> CommonSettings:
    return CommonSettings(tls_ca_file=str(pki / f"{ca}.crt"),
                          tls_cert_file=str(pki / f"{cert}.crt") if cert else "",
                          tls_key_file=str(pki / f"{cert}.key") if cert else "")


def select_request(payload: int = 0) -> embedding_pb2.SelectRequest:
    return embedding_pb2.SelectRequest(candidates=[
        embedding_pb2.SelectionCandidate(id="a" * max(1, payload), quality=1.0)],
                                       count=1)


def outcome(s: CommonSettings | None, address: str, request=None) -> str:
    """Status name of one cheap call (Select) over a channel built like the services build theirs."""
    ch = sync_channel(address, s, max_attempts=1) if s else grpc.insecure_channel(address)
    try:
        embedding_pb2_grpc.EmbeddingServiceStub(ch).Select(request or select_request(), timeout=10)
        return "OK"
    except grpc.RpcError as exc:
        return exc.code().name
    finally:
        ch.close()


def test_tls(pki, tmp_path):
    proc = start_embedding(pki, tmp_path, mutual=False)
    try:
        assert outcome(settings(pki), proc.address) == "OK"  # server-authenticated TLS, no client cert
        assert outcome(None, proc.address) == "UNAVAILABLE"  # plaintext client
        assert outcome(settings(pki, ca="other-ca"), proc.address) == "UNAVAILABLE"  # server cert not trusted
        assert outcome(settings(pki), proc.address, select_request(LIMIT + 1024)) == "RESOURCE_EXHAUSTED"
        assert outcome(settings(pki), proc.address) == "OK"
    finally:
        proc.stop()


def test_mutual_tls(pki, tmp_path):
    proc = start_embedding(pki, tmp_path, mutual=True)
    try:
        assert outcome(settings(pki, cert="client"), proc.address) == "OK"
        assert outcome(settings(pki), proc.address) == "UNAVAILABLE"  # no client certificate
        assert outcome(settings(pki, cert="intruder"), proc.address) == "UNAVAILABLE"  # client cert from another CA
        assert outcome(None, proc.address) == "UNAVAILABLE"
        assert outcome(settings(pki, cert="client"), proc.address, embedding_pb2.SelectRequest()) == "INVALID_ARGUMENT"
        assert outcome(settings(pki, cert="client"), proc.address) == "OK"
    finally:
        proc.stop()

