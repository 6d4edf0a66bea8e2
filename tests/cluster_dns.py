"""A DNS server on loopback that answers like a cluster's DNS for a headless Service: one name,
one A record per ready pod. Replicas are services bound to 127.0.0.1, 127.0.0.2 ... on one port
(all of 127/8 is loopback on Linux), and gRPC clients reach them through
`dns://127.0.0.1:<dns port>/<name>:<port>`: the real resolver (c-ares) asks this server, as a
pod's resolver asks the cluster's, and round-robin spreads calls over the answer."""

from __future__ import annotations

import socket
import threading


class ClusterDns:
    def __init__(self):
        self._answers: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._servers = []
        self.port = 0

    def set(self, name: str, addresses: list[str]) -> None:
        """The pods behind `name` from now on (the next resolution sees them)."""
        with self._lock:
            self._answers[name.rstrip(".") + "."] = list(addresses)

    def addresses(self, qname: str) -> list[str]:
        with self._lock:
            return list(self._answers.get(str(qname), []))

    def target(self, name: str, port: int) -> str:
        return f"dns://127.0.0.1:{self.port}/{name}:{port}"

    def __enter__(self) -> ClusterDns:
        from dnslib import QTYPE, RR, A
        from dnslib.server import BaseResolver, DNSLogger, DNSServer

        dns = self

        class Resolver(BaseResolver):
            def resolve(self, request, handler):
                reply = request.reply()
                if request.q.qtype == QTYPE.A:
                    for address in dns.addresses(request.q.qname):
                        reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(address), ttl=1))
                return reply

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
        for tcp in (False, True):  # c-ares retries over TCP when an answer is truncated
            server = DNSServer(Resolver(), port=self.port, address="127.0.0.1", tcp=tcp, logger=quiet)
            server.start_thread()
            self._servers.append(server)
        return self

    def __exit__(self, *exc) -> None:
        for server in self._servers:
            server.stop()


class ClusterDnsProcess:
    """`ClusterDns` in a process of its own (`python -m tests.cluster_dns`), so a benchmark can
    count the DNS server's CPU apart from its callers'. Same `set` and `target`; `pid` for the CPU."""

    def __init__(self):
        self.proc = None
        self.port = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def set(self, name: str, addresses: list[str]) -> None:
        self.proc.stdin.write(f"{name} {','.join(addresses)}\n")
        self.proc.stdin.flush()
        if self.proc.stdout.readline().strip() != "ok":
            raise RuntimeError(f"the DNS process did not take {name} -> {addresses}")

    def target(self, name: str, port: int) -> str:
        return f"dns://127.0.0.1:{self.port}/{name}:{port}"

    def __enter__(self) -> ClusterDnsProcess:
        import subprocess
        import sys
        from pathlib import Path

        root = Path(__file__).resolve().parent.parent
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.cluster_dns"], cwd=root, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.port = int(self.proc.stdout.readline())
        return self

    def __exit__(self, *exc) -> None:
        self.proc.stdin.close()  # end of input: the process stops its servers and exits
        self.proc.wait(10)


def _serve_stdin() -> None:
    """Prints the port, then takes `NAME ADDR,ADDR` lines from stdin, answering `ok` to each."""
    import sys

    with ClusterDns() as dns:
        print(dns.port, flush=True)
        for line in sys.stdin:
            name, _, addresses = line.strip().partition(" ")
            dns.set(name, [a for a in addresses.split(",") if a])
            print("ok", flush=True)


if __name__ == "__main__":
    _serve_stdin()
