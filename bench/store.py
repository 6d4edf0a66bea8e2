"""Artifact store benchmark: what the store's guarantees cost, measured side by side in one run.

- local store vs raw file I/O: the price of validation, temp file + fsync + rename, sha256 and
  the sidecar (put), and of the symlink check and open (get);
- S3 store (a real SeaweedFS `weed mini` started here) vs the local store;
- S3 store vs the bare `minio` client: the price of our retry wrapper and sha256 metadata.

    .venv/bin/python bench/store.py [--quick]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "services")]

from machine import Machine  # noqa: E402
from timing import spread_line, spreads  # noqa: E402

from likeness.core.store import open_store  # noqa: E402
from likeness.core.store_local import LocalStore  # noqa: E402
from tests.servers import SeaweedServer  # noqa: E402

SPREADS: dict[str, float] = {}  # max / min of every variant's rounds, by size


def interleaved_ms(variants: dict, repeats: int, label: str) -> dict[str, float]:
    """Median ms per variant; variants take turns each round, so drift hits all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(-1, repeats):  # round -1 warms up (connections, folders) and is not counted
        for name, fn in variants.items():
            start = time.perf_counter()
            fn(i)
            if i >= 0:
                times[name].append((time.perf_counter() - start) * 1000)
    SPREADS.update({f"{name} {label}": v for name, v in spreads(times).items()})
    return {name: statistics.median(ts) for name, ts in times.items()}


def raw_writer(folder: Path, data: bytes, fsync: bool):
    def put(i: int) -> None:
        with open(folder / f"raw-{fsync}-{i}", "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())

    return put


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (< 30 s)")
    args = parser.parse_args()
    machine = Machine()
    sizes = {"64 KiB": 64 * 1024, "8 MiB": 8 * 1024 * 1024}
    repeats = {"64 KiB": 15 if args.quick else 60, "8 MiB": 4 if args.quick else 12}

    work = Path(tempfile.mkdtemp(prefix="bench-store-"))
    server = SeaweedServer(work / "seaweed")
    (work / "seaweed").mkdir()
    server.start()
    rows, figures = [], {}
    try:
        local = LocalStore(work / "local")
        s3 = open_store(server.settings("bench"), f"s3://bench/{uuid.uuid4().hex[:8]}")
        client = server.client()
        raw_dir = work / "raw"
        raw_dir.mkdir()
        for label, size in sizes.items():
            data = os.urandom(size)
            n = repeats[label]
            put = raw_writer(raw_dir, data, fsync=False)
            put_sync = raw_writer(raw_dir, data, fsync=True)
            body = io.BytesIO

            def bare_put(i: int, data=data, size=size, body=body) -> None:
                client.put_object("bench", f"bare/{i}", body(data), size)

            t = interleaved_ms(
                {
                    "raw put": put,
                    "raw fsync put": put_sync,
                    "local put": lambda i, data=data: local.put(f"o/{i}", data),
                    "minio put": bare_put,
                    "s3 put": lambda i, data=data: s3.put(f"o/{i}", data),
                },
                n,
                label,
            )
            t |= interleaved_ms(
                {
                    "raw get": lambda i: (raw_dir / f"raw-False-{max(i, 0)}").read_bytes(),
                    "local get": lambda i: local.get(f"o/{max(i, 0)}"),
                    "minio get": lambda i: client.get_object("bench", f"bare/{max(i, 0)}").read(),
                    "s3 get": lambda i: s3.get(f"o/{max(i, 0)}"),
                    "local stat": lambda i: local.stat(f"o/{max(i, 0)}"),
                    "s3 stat": lambda i: s3.stat(f"o/{max(i, 0)}"),
                },
                n,
                label,
            )
            # Like for like: our put fsyncs, so it is compared with a raw write that fsyncs too.
            base = {"put": t["raw fsync put"], "get": t["raw get"]}
            for op in ("put", "get"):
                raw, loc, bare, s3t = base[op], t[f"local {op}"], t[f"minio {op}"], t[f"s3 {op}"]
                rows.append((f"{op} {label}", raw, loc, bare, s3t, loc / raw, s3t / bare, s3t / loc))
            rows.append(
                (
                    f"stat {label}",
                    float("nan"),
                    t["local stat"],
                    float("nan"),
                    t["s3 stat"],
                    *[float("nan")] * 3,
                )
            )
            key = label.replace(" ", "").lower()
            figures[key] = {k.replace(" ", "_") + "_ms": round(v, 3) for k, v in t.items()}
            figures[key].update(
                local_put_vs_raw_fsync=round(t["local put"] / t["raw fsync put"], 2),
                local_get_vs_raw=round(t["local get"] / t["raw get"], 2),
                s3_put_vs_minio=round(t["s3 put"] / t["minio put"], 2),
                s3_get_vs_minio=round(t["s3 get"] / t["minio get"], 2),
                s3_put_vs_local=round(t["s3 put"] / t["local put"], 2),
            )
    finally:
        server.stop()

    header = f"{'operation':<14}{'raw ms':>9}{'local ms':>10}{'minio ms':>10}{'s3 ms':>9}"
    header += f"{'local/raw':>11}{'s3/minio':>10}{'s3/local':>10}"
    print(header)
    print("-" * len(header))
    for name, *values in rows:
        print(
            f"{name:<14}"
            + "".join(
                f"{v:>{w}.2f}" if v == v else f"{'-':>{w}}"
                for v, w in zip(values, (9, 10, 10, 9, 11, 10, 10), strict=True)
            )
        )
    print(
        "medians of interleaved rounds. raw = open/write (+fsync for put, as our put fsyncs) or read_bytes;"
    )
    print(
        "minio = the bare minio client on the same SeaweedFS; s3 = our S3Store (sha256 metadata, retry wrapper)"
    )
    print(spread_line(SPREADS, None, f"each operation ({repeats['64 KiB']} rounds at 64 KiB, "
                                     f"{repeats['8 MiB']} at 8 MiB)"))
    print(json.dumps({"bench": "store", "quick": args.quick, **figures, "spreads": SPREADS,
                      "machine": machine.done()}))


if __name__ == "__main__":
    main()
