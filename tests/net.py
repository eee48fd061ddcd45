"""What the tests that start servers on the loopback interface share: a free port, waiting until a server
answers, stopping it with everything it started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    """A TCP port of 127.0.0.1 that is free right now (the OS picks it; the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_tail(log: Path, lines: int = 60) -> str:
    """The last ``lines`` lines of a server's log, for error messages."""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"


def wait_healthy(url: str, process: subprocess.Popen, log: Path, timeout_s: float) -> None:
    """Until ``url`` answers 200; raises with the end of ``log`` if the process exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}:\n{log_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} not healthy after {timeout_s} s:\n{log_tail(log)}")


def stop_process_group(process: subprocess.Popen, timeout_s: float = 20) -> None:
    """SIGTERM to the process group of ``process`` (started with ``start_new_session=True``, so the group is
    its PID: it and its children), SIGKILL if it does not stop in time."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout_s)
