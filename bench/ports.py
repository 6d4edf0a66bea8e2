"""Free ports for benchmarks that start a local stack: fixed ports collide with another run (or
another engineer's stack) on a shared machine."""

from __future__ import annotations

import random
import socket


def free_base(n: int) -> int:
    """A base port whose `n` gRPC ports and their metrics ports (+1000) are all free now."""
    for _ in range(200):
        base = random.randrange(30000, 40000)
        socks = []
        try:
            for p in [base + i for i in range(n)] + [base + 1000 + i for i in range(n)]:
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free range of ports found")
