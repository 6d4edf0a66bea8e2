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
