"""A production-like Likeness stack on one machine, as separate processes (`make up` / `make down`).

    python tools/stack.py up       # SeaweedFS (S3), PostgreSQL, every service, Prometheus
    python tools/stack.py status   # what runs, where
    python tools/stack.py down     # stop everything `up` started; nothing is left behind

Each service runs as `python -m likeness serve <name>` with exactly the LIKENESS_* environment the
Helm chart gives its pod: the chart is rendered (`helm template`) with this stack's endpoints, and
every Deployment's ConfigMap, env and secretKeyRef values are resolved from the rendered objects.
Only what differs between a pod and a laptop is rewritten: the bind address (127.0.0.1) and the
headless Service names (-> 127.0.0.1). Prometheus scrapes every service's /metrics and evaluates the
chart's rules (charts/likeness/rules/likeness.rules.yaml).

Environment:
  LIKENESS_STACK_DIR        state folder: pid files, logs, data (default /tmp/likeness-stack)
  LIKENESS_STACK_SERVICES   comma-separated subset of services (default: all six)
  LIKENESS_STACK_PORTS      `default` (the chart's ports, S3 8333, PostgreSQL 55432, Prometheus
                            9090) or `auto` (free ports, e.g. beside another stack)
  LIKENESS_STACK_VALUES     comma-separated Helm values files rendered over the defaults, e.g.
                            charts/likeness/values-gpu.yaml: the production shape, with only the
                            device (cpu) and GPU-only providers changed (production_overrides);
                            its models (sdxl-base, open-clip-vit-b-32, codeformer, buffalo_l) must
                            be in the stack's model repository
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "likeness"
RULES = CHART / "rules" / "likeness.rules.yaml"
SERVICES = ("detection", "generation", "embedding", "restoration", "training", "orchestrator")
DEFAULT_PORTS = {"orchestrator": 50050, "detection": 50051, "generation": 50052, "embedding": 50053,
                 "restoration": 50054, "training": 50055, "s3": 8333, "postgres": 55432, "prometheus": 9090}
BUCKET = "likeness"
ACCESS_KEY, SECRET_KEY = "likeness-local", "likeness-local-secret"  # loopback only
SCRAPE_INTERVAL = "2s"  # short, so a p95 is readable seconds after traffic
READY_SECONDS = 180.0


def log(msg: str) -> None:
    print(f"[stack] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def auto_ports() -> dict[str, int]:
    """Free ports; a service's metrics port (gRPC port + 1000, as in the chart) must be free too."""
    ports: dict[str, int] = {}
    for name in DEFAULT_PORTS:
        while True:
            port = free_port()
            if port + 1000 <= 65535 and port not in ports.values() and port_free(port + 1000):
                ports[name] = port
                break
    return ports


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def venv_tool(name: str) -> str:
    for candidate in (Path(sys.executable).parent / name, shutil.which(name)):
        if candidate and Path(candidate).exists():
            return str(candidate)
    for found in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(found)
    sys.exit(f"[stack] `{name}` not found: run `make venv sysdeps`")


def write_private(path: Path, text: str) -> None:
    """Writes a file only its owner can read (mode 600, also when it existed): the state and env
    files hold the S3 secret and the database URL with its password."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


class Stack:
    def __init__(self, state_dir: Path):
        self.dir = state_dir
        self.pids = state_dir / "pids"
        self.logs = state_dir / "logs"
        self.state_file = state_dir / "stack.json"

    # ---- bookkeeping ------------------------------------------------------------------------
    def load(self) -> dict:
        return json.loads(self.state_file.read_text()) if self.state_file.exists() else {}

    def save(self, state: dict) -> None:
        write_private(self.state_file, json.dumps(state, indent=2))

    def spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        """Starts `cmd` in its own process group; its pid file records the command line so `down`
        never signals a process that merely reused the pid."""
        log_file = open(self.logs / f"{name}.log", "ab")
        proc = subprocess.Popen(cmd, env=env, cwd=self.dir, stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        (self.pids / f"{name}.pid").write_text(json.dumps({"pid": proc.pid, "cmd": cmd}))
        return proc

    def tail(self, name: str, lines: int = 25) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    # ---- up ---------------------------------------------------------------------------------
    def up(self, services: list[str], port_mode: str, values_files: list[str] = (), before_services=None) -> dict:
        """Starts the stack. `values_files` (e.g. values-gpu.yaml) are rendered over the chart's
        defaults, then production_overrides applies; `before_services(state, envs)` runs once S3 and
        PostgreSQL are up, before any service starts (tests put models into the repository there)."""
        if self.load().get("running"):
            sys.exit(f"[stack] already up (state in {self.dir}); `make down` first")
        for d in (self.dir, self.pids, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)  # PostgreSQL runs as its own user and must reach its folder
        ports = dict(DEFAULT_PORTS) if port_mode == "default" else auto_ports()
        if port_mode == "default":
            wanted = {n: ports[n] for n in (*services, "s3", "postgres", "prometheus")}
            wanted.update({f"{n} metrics": ports[n] + 1000 for n in services})
            busy = sorted(f"{n} {p}" for n, p in wanted.items() if not port_free(p))
            if busy:
                sys.exit(f"[stack] ports in use: {', '.join(busy)}; stop what holds them or set "
                         "LIKENESS_STACK_PORTS=auto")
        state = {"running": True, "dir": str(self.dir), "ports": ports, "services": services,
                 "s3": f"127.0.0.1:{ports['s3']}", "prometheus": f"http://127.0.0.1:{ports['prometheus']}"}
        self.save(state)
        try:
            self.start_seaweed(ports)
            state["database_url"] = self.start_postgres(ports["postgres"])
            self.save(state)
            envs = service_environments(services, ports, state["database_url"], self.dir, values_files)
            if values_files:
                envs = {name: production_overrides(env) for name, env in envs.items()}
            write_private(self.dir / "env.json", json.dumps(envs, indent=2, sort_keys=True))
            if "orchestrator" in services:  # what `likeness` needs to submit jobs and upload inputs here
                from likeness.client.stack_state import client_block

                state["client"] = client_block(f"127.0.0.1:{ports['orchestrator']}", envs["orchestrator"])
                self.save(state)
            if before_services is not None:
                before_services(state, envs)
            procs = {name: self.spawn(name, [sys.executable, "-m", "likeness", "serve", name],
                                      env={**os.environ, **absolute_pythonpath(), **envs[name]}) for name in services}
            self.start_prometheus(services, ports)
            self.wait_services(procs, ports)
            self.wait_targets(state["prometheus"], len(services))
        except BaseException as exc:
            log(f"start failed ({exc}); stopping what started")
            self.down(quiet=True)
            raise
        for name in services:
            log(f"{name:<13} 127.0.0.1:{ports[name]}  metrics :{ports[name] + 1000}  log {self.logs / name}.log")
        log(f"S3 {state['s3']} (bucket {BUCKET}), PostgreSQL {state['database_url']}")
        log(f"Prometheus {state['prometheus']}  -  `make down` stops everything")
        return state

    def start_seaweed(self, ports: dict) -> None:
        data = self.dir / "seaweed"
        data.mkdir(exist_ok=True)
        # free ports, but none the services were given (not bound yet) or their metrics ports
        taken = set(ports.values()) | {p + 1000 for p in ports.values()}

        def spare() -> int:
            while (port := free_port()) in taken:
                pass
            taken.add(port)
            return port

        flags = {f"{p}.port": spare() for p in ("master", "volume", "filer", "admin")}
        flags.update({f"{p}.port.grpc": spare() for p in ("master", "volume", "filer", "admin", "s3")})
        flags["s3.port"] = ports["s3"]
        cmd = [venv_tool("weed"), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               "-admin.ui=false", "-webdav=false", "-master.telemetry=false", "-s3.port.iceberg=0",
               "-s3.port.lance=0", *(f"-{k}={v}" for k, v in flags.items())]
        proc = self.spawn("seaweed", cmd, env={**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                                               "AWS_SECRET_ACCESS_KEY": SECRET_KEY})
        from minio import Minio

        client = Minio(f"127.0.0.1:{ports['s3']}", ACCESS_KEY, SECRET_KEY, secure=False, region="us-east-1")
        deadline = time.monotonic() + 60
        while True:  # the S3 port opens before the filer answers: wait for a real bucket call
            if proc.poll() is not None:
                raise RuntimeError(f"weed exited:\n{self.tail('seaweed')}")
            try:
                if not client.bucket_exists(BUCKET):
                    client.make_bucket(BUCKET)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"SeaweedFS not ready in 60 s:\n{self.tail('seaweed')}") from None
                time.sleep(0.3)
        log(f"SeaweedFS S3 on 127.0.0.1:{ports['s3']}, bucket {BUCKET}")

    def postgres_user(self) -> tuple[list[str], str | None]:
        """initdb refuses root: as root the cluster belongs to the `postgres` system user."""
        if os.geteuid() != 0:
            return [], None
        pw = pwd.getpwnam("postgres")
        return ["runuser", "-u", "postgres", "--"], pw.pw_name

    def start_postgres(self, port: int) -> str:
        prefix, user = self.postgres_user()
        base = self.dir / "postgres"
        base.mkdir(exist_ok=True)
        if user:
            pw = pwd.getpwnam(user)
            os.chown(base, pw.pw_uid, pw.pw_gid)
        data = base / "data"
        if not data.exists():
            subprocess.run([*prefix, venv_tool("initdb"), "-D", str(data), "-U", "likeness", "--auth=trust",
                            "-E", "UTF8", "--no-sync"], check=True, capture_output=True, timeout=120)
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {base}"
        result = subprocess.run([*prefix, venv_tool("pg_ctl"), "-D", str(data), "-l", str(base / "postgres.log"),
                                 "-o", opts, "-w", "-t", "60", "start"], capture_output=True, text=True, timeout=90)
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {result.stderr}\n{(base / 'postgres.log').read_text()[-2000:]}")
        (self.pids / "postgres.pid").write_text(json.dumps({"pg_data": str(data)}))
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=port, user="likeness", dbname="postgres",
                             autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'likeness'").fetchone():
                conn.execute('CREATE DATABASE "likeness"')
        log(f"PostgreSQL on 127.0.0.1:{port}")
        return f"postgresql+psycopg://likeness@127.0.0.1:{port}/likeness"

    def start_prometheus(self, services: list[str], ports: dict) -> None:
        config = {
            "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
            "rule_files": [str(RULES)],
            "scrape_configs": [{
                "job_name": "likeness",
                # as the chart's ServiceMonitor: keep the metrics' own `service` label
                "honor_labels": True,
                "static_configs": [{"targets": [f"127.0.0.1:{ports[n] + 1000}"],
                                    "labels": {"namespace": "local", "pod": f"likeness-{n}-local"}}
                                   for n in services],
            }],
        }
        path = self.dir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        (self.dir / "prometheus-data").mkdir(exist_ok=True)
        self.spawn("prometheus", [venv_tool("prometheus"), f"--config.file={path}",
                                  f"--storage.tsdb.path={self.dir / 'prometheus-data'}",
                                  f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
                                  "--storage.tsdb.retention.time=1d",
                                  # as the cluster Prometheus should run (docs/operations.md): keeps the
                                  # trace ids of the latency histograms (exemplars) for Grafana's p95 panels
                                  "--enable-feature=exemplar-storage"])

    def wait_services(self, procs: dict[str, subprocess.Popen], ports: dict) -> None:
        from likeness.core.channels import health_status

        pending = dict(procs)
        deadline = time.monotonic() + READY_SECONDS
        while pending:
            for name, proc in list(pending.items()):
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")
                if health_status(f"127.0.0.1:{ports[name]}") == "SERVING":
                    log(f"{name} SERVING")
                    del pending[name]
            if time.monotonic() > deadline:
                raise RuntimeError(f"not SERVING after {READY_SECONDS:.0f} s: {sorted(pending)}")
            time.sleep(0.3)

    def wait_targets(self, prometheus: str, expected: int) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{prometheus}/api/v1/targets?state=active", timeout=2) as r:
                    targets = json.load(r)["data"]["activeTargets"]
                if sum(t["health"] == "up" for t in targets) == expected:
                    log(f"Prometheus scrapes {expected} services")
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Prometheus targets not up in 60 s:\n{self.tail('prometheus')}")
            time.sleep(0.5)

    # ---- down -------------------------------------------------------------------------------
    def down(self, quiet: bool = False) -> list[str]:
        """Stops services first (they drain), then Prometheus, SeaweedFS, PostgreSQL. Returns what
        is still alive afterwards (nothing, unless a process ignores SIGKILL)."""
        survivors = []
        order = [n for n in (*SERVICES, "prometheus", "seaweed") if (self.pids / f"{n}.pid").exists()]
        started = {n: json.loads((self.pids / f"{n}.pid").read_text()) for n in order}
        for name in order:  # signal every service at once: they drain in parallel
            signal_group(started[name], signal.SIGTERM)
        for name in order:
            if not wait_gone(started[name], 40):
                signal_group(started[name], signal.SIGKILL)
                if not wait_gone(started[name], 5):
                    survivors.append(name)
            (self.pids / f"{name}.pid").unlink()
            if not quiet:
                log(f"stopped {name}")
        pg = self.pids / "postgres.pid"
        if pg.exists():
            data = json.loads(pg.read_text())["pg_data"]
            prefix, _ = self.postgres_user()
            subprocess.run([*prefix, venv_tool("pg_ctl"), "-D", data, "-m", "fast", "-w", "stop"],
                           capture_output=True, timeout=60)
            if Path(data, "postmaster.pid").exists():
                survivors.append("postgres")
            else:
                pg.unlink()
                if not quiet:
                    log("stopped postgres")
        state = self.load()
        if state:
            state["running"] = bool(survivors)
            self.save(state)
        return survivors

    def status(self) -> int:
        state = self.load()
        if not state.get("running"):
            log("down")
            return 1
        for f in sorted(self.pids.glob("*.pid")):
            info = json.loads(f.read_text())
            alive = alive_process(info) if "pid" in info else Path(info["pg_data"], "postmaster.pid").exists()
            log(f"{f.stem:<13} {'running' if alive else 'DEAD'}")
        log(json.dumps({k: state[k] for k in ("ports", "s3", "prometheus", "database_url") if k in state}))
        return 0


def alive_process(info: dict) -> bool:
    """The recorded pid still runs the recorded command (not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{info['pid']}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    stat = Path(f"/proc/{info['pid']}/stat").read_text()
    if stat.rsplit(")", 1)[1].split()[0] == "Z":
        return False
    return cmdline[: len(info["cmd"])] == [c.encode() for c in info["cmd"]]


def signal_group(info: dict, sig: int) -> None:
    if alive_process(info):
        try:
            os.killpg(info["pid"], sig)  # the process group it leads: children too
        except ProcessLookupError:
            pass


def wait_gone(info: dict, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive_process(info):
            try:
                os.waitpid(info["pid"], os.WNOHANG)  # reap when it was our child
            except ChildProcessError:
                pass
            return True
        time.sleep(0.1)
    return False


def absolute_pythonpath() -> dict[str, str]:
    """PYTHONPATH with relative entries made absolute: services run in the state folder, and a
    `PYTHONPATH=services:.` meant for this checkout would silently load another copy of the code."""
    entries = [e for e in os.environ.get("PYTHONPATH", "").split(os.pathsep) if e]
    return {"PYTHONPATH": os.pathsep.join(str(Path(e).resolve()) for e in entries)} if entries else {}


def helm_objects(values: list[str]) -> list[dict]:
    out = subprocess.run([venv_tool("helm"), "template", "likeness", str(CHART), *values],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return [d for d in yaml.safe_load_all(out) if d]


POD_CACHE_MOUNT = "/var/cache/likeness/models"  # modelCache.mountPath in values.yaml and values-gpu.yaml


def service_environments(services: list[str], ports: dict, database_url: str, state_dir: Path,
                         values_files: list[str] = ()) -> dict:
    """The LIKENESS_* environment of each service, taken from its Deployment in the rendered chart
    (with `values_files`, e.g. values-gpu.yaml, applied first; see production_overrides)."""
    values = [arg for f in values_files for arg in ("-f", str(f))]
    if values_files:  # the chart creates the Secrets from the keys below instead of expecting existing ones
        values += ["--set", "store.existingSecret=", "--set", "database.existingSecret=",
                   "--set", "store.secure=false", "--set", "store.uri=s3://likeness",
                   "--set", "modelRepository=s3://likeness/models"]
    values += ["--set", f"store.endpoint=127.0.0.1:{ports['s3']}", "--set", f"store.accessKey={ACCESS_KEY}",
              "--set", f"store.secretKey={SECRET_KEY}", "--set", "minio.enabled=false",
              "--set", f"database.url={database_url}",
              "--set", f"modelCache.mountPath={state_dir / 'model-cache'}"]
    for name in SERVICES:
        values += ["--set", f"services.{name}.enabled={'true' if name in services else 'false'}",
                   "--set", f"services.{name}.port={ports[name]}"]
    objects = helm_objects(values)
    configmaps = {o["metadata"]["name"]: o["data"] for o in objects if o["kind"] == "ConfigMap"}
    secrets = {o["metadata"]["name"]: o["data"] for o in objects if o["kind"] == "Secret"}
    envs = {}
    for dep in (o for o in objects if o["kind"] == "Deployment"):
        name = dep["metadata"]["labels"]["app.kubernetes.io/component"]
        container = dep["spec"]["template"]["spec"]["containers"][0]
        env: dict[str, str] = {}
        for src in container.get("envFrom", []):
            env.update(configmaps[src["configMapRef"]["name"]])
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = item["value"]
            elif ref := item["valueFrom"].get("secretKeyRef"):
                env[item["name"]] = base64.b64decode(secrets[ref["name"]][ref["key"]]).decode()
            elif item["valueFrom"].get("fieldRef", {}).get("fieldPath") == "metadata.name":
                env[item["name"]] = f"likeness-{name}-local"
        # a pod binds every interface and reaches peers by headless Service name; here: loopback
        env["LIKENESS_HOST"] = "127.0.0.1"
        env = {k: re.sub(r"likeness-\w+-headless", "127.0.0.1", v) for k, v in env.items()}
        # paths a values file pins under the pod's model-cache mount (the TensorRT engine cache) move with it
        env = {k: v.replace(POD_CACHE_MOUNT, str(state_dir / "model-cache")) for k, v in env.items()}
        env["HOME"] = os.environ.get("HOME", "/tmp")
        env["PYTHONUNBUFFERED"] = "1"
        envs[name] = env
    return envs


# What a machine without a GPU cannot do: the device, and the GPU-only ONNX Runtime providers.
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
DEVICE_SETTINGS = ("LIKENESS_GENERATION_DEVICE", "LIKENESS_EMBEDDING_DEVICE", "LIKENESS_RESTORATION_DEVICE",
                   "LIKENESS_DETECTION_DEVICE")
PROVIDER_SETTINGS = ("LIKENESS_GENERATION_ONNX_PROVIDERS", "LIKENESS_DETECTION_PROVIDERS")


def production_overrides(env: dict[str, str]) -> dict[str, str]:
    """A rendered GPU environment made runnable on a CPU machine, changing only what a CPU cannot
    do: every `*_DEVICE` that names CUDA becomes `cpu`, and GPU-only providers leave the provider
    lists (CPUExecutionProvider stays or is added). dtypes, engines, batch sizes, presets and
    backends stay as rendered, so float16/bfloat16 paths run on the CPU."""
    out = dict(env)
    for key in DEVICE_SETTINGS:
        if out.get(key, "").startswith("cuda"):
            out[key] = "cpu"
    for key in PROVIDER_SETTINGS:
        if key in out and out[key].strip().lower() != "auto":
            kept = [p.strip() for p in out[key].split(",") if p.strip() and p.strip() not in GPU_PROVIDERS]
            out[key] = ",".join(kept or ["CPUExecutionProvider"])
    return out


def main() -> int:
    command = sys.argv[1] if len(sys.argv) > 1 else "status"
    stack = Stack(Path(os.environ.get("LIKENESS_STACK_DIR", "/tmp/likeness-stack")).resolve())
    if command == "up":
        wanted = os.environ.get("LIKENESS_STACK_SERVICES", ",".join(SERVICES))
        services = [s for s in SERVICES if s in {w.strip() for w in wanted.split(",")}]
        unknown = {w.strip() for w in wanted.split(",")} - set(SERVICES)
        if unknown or not services:
            sys.exit(f"[stack] LIKENESS_STACK_SERVICES: unknown {sorted(unknown)}; choose from {', '.join(SERVICES)}")
        mode = os.environ.get("LIKENESS_STACK_PORTS", "default")
        if mode not in ("default", "auto"):
            sys.exit("[stack] LIKENESS_STACK_PORTS must be `default` or `auto`")
        stack.up(services, mode, [f for f in os.environ.get("LIKENESS_STACK_VALUES", "").split(",") if f])
        return 0
    if command == "down":
        survivors = stack.down()
        if survivors:
            log(f"still alive: {survivors}")
            return 1
        log("down: nothing left running")
        return 0
    if command == "status":
        return stack.status()
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
