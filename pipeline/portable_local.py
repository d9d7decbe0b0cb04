"""Portable Beam job servers on this machine, for tests and benchmarks: loopback only.

Three processes make a portable run, each started and stopped here by its process id:

- a **job server**: Beam's Flink job server jar (``java -jar ... --flink-master [local]`` runs an
  embedded Flink cluster inside it) or Prism, Beam's Go runner built from the Go module proxy;
- an **SDK worker pool** (``python -m apache_beam.runners.worker.worker_pool_main``) that starts
  one Python SDK worker process per request of the runner (``--environment_type=EXTERNAL``);
- the **launcher**: ``vecap run ... --runner FlinkRunner --parallelism 2 --job_endpoint ...``
  (the same command line for both job servers: :func:`runner_args`).

Where the job server and Prism come from (``make portable-runners``): the job-server jar is
fetched by ``scripts/fetch_flink_job_server.sh`` with Maven into ``~/.cache/vecap/flink``, Prism
is built by ``scripts/build_prism.sh`` into ``~/.cache/vecap/prism/<beam version>``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Beam 2.77 publishes job servers for Flink 1.19, 1.20, 2.0, 2.1, 2.2. 1.20 is the last 1.x
# line, supports Java 17 and runs Beam's long-tested batch translation; override with
# VECAP_FLINK_VERSION (the script and these helpers read the same variable).
DEFAULT_FLINK_VERSION = "1.20"
CACHE_ROOT = Path(os.environ.get("VECAP_CACHE_DIR", Path.home() / ".cache" / "vecap"))
LOOPBACK = "127.0.0.1"


class PortableUnavailable(RuntimeError):
    """A job server is not on this machine; the message says why and how to get it."""


def beam_version() -> str:
    import apache_beam

    return apache_beam.__version__


def flink_version() -> str:
    return os.environ.get("VECAP_FLINK_VERSION", DEFAULT_FLINK_VERSION)


def flink_jar_path(version: str | None = None, beam: str | None = None) -> Path:
    version, beam = version or flink_version(), beam or beam_version()
    explicit = os.environ.get("VECAP_FLINK_JOB_SERVER_JAR")
    if explicit:
        return Path(explicit)
    return CACHE_ROOT / "flink" / f"beam-runners-flink-{version}-job-server-{beam}.jar"


def find_flink_jar() -> Path:
    """The cached job-server jar, or :class:`PortableUnavailable` with the fetch script's reason."""
    jar = flink_jar_path()
    if jar.is_file():
        return jar
    why = Path(f"{jar}.unavailable")  # written by scripts/fetch_flink_job_server.sh
    reason = why.read_text().strip() if why.is_file() else "not fetched yet"
    raise PortableUnavailable(
        f"no Flink job-server jar at {jar} ({reason}); run `make portable-runners` or point "
        "VECAP_FLINK_JOB_SERVER_JAR at a beam-runners-flink-<flink>-job-server-<beam>.jar"
    )


def prism_path(beam: str | None = None) -> Path:
    explicit = os.environ.get("VECAP_PRISM_BINARY")
    if explicit:
        return Path(explicit)
    return CACHE_ROOT / "prism" / (beam or beam_version()) / "prism"


def find_prism() -> Path:
    path = prism_path()
    if path.is_file() and os.access(path, os.X_OK):
        return path
    raise PortableUnavailable(
        f"no Prism binary at {path}; run `make portable-runners` (scripts/build_prism.sh builds "
        "it from the Go module proxy) or point VECAP_PRISM_BINARY at one"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen, timeout_s: float, log: Path) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before listening: {_tail(log)}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            if s.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"not listening on {LOOPBACK}:{port} after {timeout_s:.0f} s: {_tail(log)}")


def _tail(log: Path, chars: int = 3000) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


@dataclass
class Service:
    """One started process (own process group), its log and the port it serves."""

    name: str
    proc: subprocess.Popen
    port: int
    log: Path
    extra_ports: dict[str, int] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group this service leads (it and the children it started)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
                os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill(signal.SIGTERM)


def _start(name: str, argv: Sequence[str], port: int, workdir: Path, env: dict, timeout_s: float,
           extra_ports: dict[str, int] | None = None) -> Service:  # fmt: skip
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(argv),
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # own process group: kill() reaches its children too
        )
    service = Service(name, proc, port, log, extra_ports or {})
    try:
        wait_for_port(port, proc, timeout_s, log)
    except BaseException:
        service.kill()
        raise
    return service


def worker_env(python: str | None = None) -> dict[str, str]:
    """The environment of SDK worker processes: the pool starts them as ``python -c ...``, so
    this interpreter's folder goes first on PATH (a bare ``python`` may lack apache_beam)."""
    python = python or sys.executable
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(python).parent), env.get("PATH", "")])
    return env


def start_worker_pool(workdir: Path, *, python: str | None = None, port: int | None = None,
                      timeout_s: float = 120) -> Service:  # fmt: skip
    """Beam's SDK worker pool: each StartWorker request forks a separate SDK worker process."""
    port = port or free_port()
    argv = [python or sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
            f"--service_port={port}"]  # fmt: skip
    return _start("worker-pool", argv, port, workdir, worker_env(python), timeout_s)


def start_prism(workdir: Path, *, port: int | None = None, timeout_s: float = 60) -> Service:
    binary = find_prism()
    port = port or free_port()
    argv = [str(binary), f"--job_port={port}", "--serve_http=false", "--log_level=warn"]
    return _start("prism", argv, port, workdir, dict(os.environ), timeout_s)


FLINK_LOOPBACK_CONF = {
    # the embedded cluster's RPC, REST and data ports on loopback only
    "jobmanager.rpc.address": LOOPBACK,
    "jobmanager.bind-host": LOOPBACK,
    "taskmanager.host": LOOPBACK,
    "taskmanager.bind-host": LOOPBACK,
    "rest.address": LOOPBACK,
    "rest.bind-address": LOOPBACK,
    "blob.server.port": "0",
    "rest.bind-port": "0",
    "metrics.internal.query-service.port": "0",
}


# Flink 1.x serialises JDK classes reflectively (Kryo); on Java 17 its own launch scripts open
# these packages (env.java.opts.all), which `java -jar` of the job server does not do by itself.
JAVA17_OPENS = tuple(
    f"--add-opens=java.base/{pkg}=ALL-UNNAMED"
    for pkg in (
        "java.lang", "java.lang.reflect", "java.io", "java.net", "java.nio", "sun.nio.ch",
        "java.text", "java.time", "java.util", "java.util.concurrent",
        "java.util.concurrent.atomic", "java.util.concurrent.locks",
    )
)  # fmt: skip


def flink_job_server_argv(
    jar: Path, workdir: Path, *, java: str, port: int, artifact_port: int, expansion_port: int,
    parallelism: int,
) -> list[str]:  # fmt: skip
    """The job server's command line and its Flink configuration (written to
    ``workdir/flink-conf``): an embedded cluster with ``parallelism`` slots, loopback only."""
    conf_dir = workdir / "flink-conf"
    conf_dir.mkdir(parents=True, exist_ok=True)
    conf = {**FLINK_LOOPBACK_CONF, "parallelism.default": str(parallelism),
            "taskmanager.numberOfTaskSlots": str(max(parallelism, 1))}  # fmt: skip
    text = "".join(f"{k}: {v}\n" for k, v in conf.items())
    # Flink 1.x reads flink-conf.yaml, Flink 1.19+ prefers config.yaml (2.x only reads that)
    for name in ("flink-conf.yaml", "config.yaml"):
        (conf_dir / name).write_text(text)
    return [
        java,
        *JAVA17_OPENS,
        "-Djava.net.preferIPv4Stack=true",
        f"-Djava.io.tmpdir={workdir}",
        "-jar", str(jar),
        "--flink-master=[local]",
        f"--flink-conf-dir={conf_dir}",
        f"--job-host={LOOPBACK}",
        f"--job-port={port}",
        f"--artifact-port={artifact_port}",
        f"--expansion-port={expansion_port}",
        f"--artifacts-dir={workdir / 'artifacts'}",
    ]  # fmt: skip


def start_flink_job_server(workdir: Path, *, parallelism: int = 2, port: int | None = None,
                           timeout_s: float = 180) -> Service:  # fmt: skip
    """Beam's Flink job server with an embedded Flink cluster (``--flink-master [local]``).

    Every address is loopback: the gRPC services through ``--job-host`` and the embedded
    cluster through a Flink configuration directory (``--flink-conf-dir``).
    """
    jar = find_flink_jar()
    java = shutil.which("java")
    if java is None:
        raise PortableUnavailable("no `java` on PATH: the Flink job server needs Java 17")
    port = port or free_port()
    artifact_port, expansion_port = free_port(), free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    argv = flink_job_server_argv(
        jar, workdir, java=java, port=port, artifact_port=artifact_port,
        expansion_port=expansion_port, parallelism=parallelism,
    )  # fmt: skip
    return _start("flink-job-server", argv, port, workdir, dict(os.environ), timeout_s,
                  {"artifact": artifact_port, "expansion": expansion_port})  # fmt: skip


def runner_args(kind: str, job_server: Service, worker_pool: Service, *,
                parallelism: int = 2) -> list[str]:  # fmt: skip
    """The Beam options of ``vecap run`` for a started job server and worker pool.

    Both kinds get the same launcher: ``--runner FlinkRunner`` with its Flink options and
    ``--job_endpoint`` (FlinkRunner submits to a given job service instead of starting one), so
    a run against Prism's job service exercises the very command line a Flink run uses; only
    the job server behind the endpoint differs."""
    if kind not in ("flink", "prism"):
        raise ValueError(f"unknown portable runner kind {kind!r}")
    return [
        "--runner=FlinkRunner",
        f"--flink_version={flink_version()}",
        f"--parallelism={parallelism}",
        # one SDK worker process per slot (Flink's default is one per TaskManager, all slots
        # sharing it through threads); Prism runs one worker per environment and ignores it
        f"--sdk_worker_parallelism={parallelism}",
        f"--job_endpoint={job_server.endpoint}",
        "--environment_type=EXTERNAL",
        f"--environment_config={worker_pool.endpoint}",
    ]


def start_job_server(kind: str, workdir: Path, *, parallelism: int = 2) -> Service:
    if kind == "flink":
        return start_flink_job_server(workdir, parallelism=parallelism)
    if kind == "prism":
        return start_prism(workdir)
    raise ValueError(f"unknown portable runner kind {kind!r}")


__all__ = [
    "DEFAULT_FLINK_VERSION",
    "PortableUnavailable",
    "Service",
    "find_flink_jar",
    "find_prism",
    "free_port",
    "runner_args",
    "start_flink_job_server",
    "start_job_server",
    "start_prism",
    "start_worker_pool",
]
