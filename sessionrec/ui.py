"""``make ui``: Airflow and MLflow on localhost, against the same stores as ``make run``, until Ctrl-C.

    python -m sessionrec.ui [--airflow-port PORT] [--mlflow-port PORT]

Airflow runs as ``airflow standalone`` (api-server, scheduler, dag-processor, triggerer; LocalExecutor
with 4 slots) in the project's own Airflow home; MLflow as ``mlflow server`` on the tracking store and
artifact root of the settings. Output goes to log files; the console shows the URLs and the login.

Ports are chosen when the servers start, so nothing collides with another server on the machine: the
UIs take 8080 and 5000 when those are free and a free port otherwise (a port given on the command line
must be free); Airflow's worker and triggerer log servers, which default to the fixed 8793 and 8794,
always get free ports.

Stopping: ``airflow standalone`` shuts its components down cleanly only on SIGINT (SIGTERM leaves
dozens of processes behind), and a process started in the background inherits SIGINT *ignored*. So both
servers start in their own sessions with SIGINT restored to its default, Ctrl-C here is forwarded to
them as SIGINT, and whatever is still alive after a grace period is terminated as a process group.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType

from sessionrec import airflow_env
from sessionrec.config import Settings, load_settings

log = logging.getLogger(__name__)

DEFAULT_MLFLOW_PORT = 5000
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"
STOP_GRACE_S = 30.0


def _restore_sigint() -> None:
    """Run in the child before exec: SIGINT back to its default, so the server can be stopped with it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def port_free(port: int) -> bool:
    """Nothing listens on ``port`` of 127.0.0.1: a server could bind it now (as the servers do, with
    ``SO_REUSEADDR``, so connections of an earlier server still closing do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports of 127.0.0.1 that are free now, chosen by the kernel."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def choose_ports(wanted: Sequence[tuple[int | None, int | None]]) -> list[int]:
    """One distinct port per ``(requested, preferred)`` pair: the requested port (it must be free), else
    the preferred one when free, else a free port chosen by the kernel."""
    spare = free_ports(len(wanted))
    chosen: list[int] = []
    for requested, preferred in wanted:
        if requested is not None:
            if requested in chosen or not port_free(requested):
                raise RuntimeError(f"port {requested} on 127.0.0.1 is in use: stop what listens there, "
                                   "pick another port or leave the choice to the program")
            chosen.append(requested)
        elif preferred is not None and preferred not in chosen and port_free(preferred):
            chosen.append(preferred)
        else:
            chosen.append(next(port for port in spare if port not in chosen))
    return chosen


def http_json(url: str, timeout: float = 5.0) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def airflow_healthy(port: int) -> bool:
    """Every component reported by ``/api/v2/monitor/health`` is healthy."""
    try:
        health = http_json(f"http://127.0.0.1:{port}/api/v2/monitor/health")
    except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
        return False
    components = ("metadatabase", "scheduler", "triggerer", "dag_processor")
    return isinstance(health, dict) and all(
        (health.get(name) or {}).get("status") == "healthy" for name in components)


def mlflow_healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@dataclass
class Server:
    """One started server: its process (a session leader), its URL and where its output goes."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    log_file: Path
    healthy: Callable[[], bool]

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGINT, then SIGTERM to the process group after ``grace_s``, then SIGKILL."""
        for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            if self.process.poll() is not None:
                break
            try:
                if sig == signal.SIGINT:
                    self.process.send_signal(sig)
                else:
                    os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s of %s", self.name, wait_s, sig.name)
        self._reap_group()

    def _reap_group(self) -> None:
        """Children the server left behind in its process group."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
        log.warning("%s left processes behind; killed them", self.name)


def start_server(name: str, command: Sequence[str], env: Mapping[str, str], log_file: Path, url: str,
                 healthy: Callable[[], bool]) -> Server:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as out:
        process = subprocess.Popen(list(command), env=dict(env), cwd=env["AIRFLOW_HOME"], stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, preexec_fn=_restore_sigint)
    log.info("%s started (pid %d), output in %s", name, process.pid, log_file)
    return Server(name, process, url, log_file, healthy)


def mlflow_command(settings: Settings, port: int) -> list[str]:
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", settings.mlflow_tracking_uri,
            "--artifacts-destination", settings.mlflow_artifact_root, "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1"]


class Services:
    """Airflow standalone and (optionally) the MLflow server, as a context manager that stops both.

    A port left as ``None`` is chosen when :meth:`start` runs (a free one, or the preferred one when
    free); ``airflow_port`` / ``mlflow_port`` hold the ports in use once started. ``extra_env`` is added
    to the Airflow environment of :mod:`sessionrec.airflow_env`.
    """

    def __init__(self, settings: Settings, airflow_port: int | None = None, mlflow_port: int | None = None,
                 mlflow: bool = True, preferred_ports: tuple[int | None, int | None] = (None, None),
                 extra_env: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.airflow_port: int | None = airflow_port
        self.mlflow_port: int | None = mlflow_port
        self.mlflow = mlflow
        self.preferred_ports = preferred_ports
        self.extra_env = dict(extra_env or {})
        self.env: dict[str, str] = {}
        self.home = airflow_env.airflow_home(settings)
        self.servers: list[Server] = []

    def _choose_ports(self) -> None:
        preferred_airflow, preferred_mlflow = self.preferred_ports
        wanted = [(self.airflow_port, preferred_airflow), (None, None), (None, None)]
        if self.mlflow:
            wanted.append((self.mlflow_port, preferred_mlflow))
        self.airflow_port, worker_logs, trigger_logs, *mlflow = choose_ports(wanted)
        self.mlflow_port = mlflow[0] if mlflow else None
        self.env = {**airflow_env.airflow_env(self.settings, api_port=self.airflow_port,
                                              log_server_ports=(worker_logs, trigger_logs)),
                    **self.extra_env}

    def start(self, timeout_s: float = 180.0) -> None:
        """Choose the ports, start the servers and wait until they are healthy; on failure stop what
        started and raise."""
        self._choose_ports()
        airflow_env.prepare(self.settings, self.env)
        (self.home / airflow_env.SERVICES_PID_FILE).write_text(str(os.getpid()))
        try:
            airflow_port = self.airflow_port
            self.servers.append(start_server(
                "airflow standalone", airflow_env.airflow_command(["standalone"]), self.env,
                self.home / "standalone.log", f"http://localhost:{airflow_port}",
                lambda: airflow_healthy(airflow_port)))
            if self.mlflow_port is not None:
                mlflow_port = self.mlflow_port
                mlflow_env = {**self.env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
                self.servers.append(start_server(
                    "mlflow server", mlflow_command(self.settings, mlflow_port), mlflow_env,
                    self.settings.home / "mlflow" / "server.log", f"http://localhost:{mlflow_port}",
                    lambda: mlflow_healthy(mlflow_port)))
            self.wait_healthy(timeout_s)
        except BaseException:
            self.stop()
            raise

    def wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        pending = list(self.servers)
        while pending:
            self.check_alive()
            pending = [server for server in pending if not server.healthy()]
            if pending and time.monotonic() > deadline:
                names = ", ".join(server.name for server in pending)
                raise TimeoutError(f"{names} not healthy after {timeout_s:.0f} s; see "
                                   + ", ".join(str(server.log_file) for server in pending))
            if pending:
                time.sleep(1.0)

    def check_alive(self) -> None:
        for server in self.servers:
            if server.process.poll() is not None:
                raise RuntimeError(f"{server.name} exited with {server.process.returncode}; "
                                   f"see {server.log_file}")

    def admin_password(self) -> str | None:
        """The generated password of the ``admin`` user (simple auth manager)."""
        path = self.home / PASSWORDS_FILE
        return json.loads(path.read_text()).get("admin") if path.is_file() else None

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()
            log.info("%s stopped", server.name)
        self.servers.clear()
        (self.home / airflow_env.SERVICES_PID_FILE).unlink(missing_ok=True)

    def __enter__(self) -> Services:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()


def _sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sessionrec.ui", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--airflow-port", type=int, default=None,
                        help=f"default: {airflow_env.DEFAULT_API_PORT} when free, otherwise a free port")
    parser.add_argument("--mlflow-port", type=int, default=None,
                        help=f"default: {DEFAULT_MLFLOW_PORT} when free, otherwise a free port")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    services = Services(load_settings(), args.airflow_port, args.mlflow_port,
                        preferred_ports=(airflow_env.DEFAULT_API_PORT, DEFAULT_MLFLOW_PORT))
    print("Starting Airflow and MLflow (about 30 s)...", flush=True)
    try:
        services.start()
        print(f"\nAirflow: http://localhost:{services.airflow_port}   user admin, password "
              f"{services.admin_password()}   (DAGs start paused: switch one on to let the schedule and "
              "asset triggers run it)")
        print(f"MLflow:  http://localhost:{services.mlflow_port}")
        print(f"Logs:    {', '.join(str(server.log_file) for server in services.servers)}")
        print("Press Ctrl-C to stop both.", flush=True)
        while True:
            services.check_alive()
            time.sleep(2.0)
    except KeyboardInterrupt:
        print("\nStopping...", flush=True)
    except (RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        services.stop()
        return 1
    services.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
