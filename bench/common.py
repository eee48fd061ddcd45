"""What every benchmark shares: a measurement in a fresh process, the machine's description, the JSON file.

Benchmarks run as modules from the repository root (``python -m bench.train``), so they import this
one as ``bench.common``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

SAMPLE_EVERY_S = 0.1


def _child(queue: multiprocessing.Queue, function: Callable[..., dict[str, Any]], args: tuple) -> None:
    queue.put(function(*args))


def _sample_tree(process: psutil.Process, cpu_seconds: dict[int, float]) -> int:
    """Summed RSS of ``process`` and its descendants; records each one's CPU seconds so far."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            with member.oneshot():
                total += member.memory_info().rss
                times = member.cpu_times()
                cpu_seconds[member.pid] = times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def process_tree_cpu_seconds() -> float:
    """CPU seconds so far of this process and its live descendants (Spark's JVM and Python workers)."""
    cpu_seconds: dict[int, float] = {}
    _sample_tree(psutil.Process(), cpu_seconds)
    return sum(cpu_seconds.values())


def _load_averages() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def in_fresh_process(function: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run ``function(*args)`` in a spawned process and return its result plus what it cost.

    Added keys: ``process_seconds`` (wall time, start-up and imports included), ``peak_rss_mb`` (the largest
    summed RSS of the process and its children, such as Spark's JVM and Python workers, sampled every
    0.1 s), ``cpu_seconds`` (their CPU time, less sensitive than wall time to other users of a shared
    machine) and the 1, 5 and 15-minute load averages before and after.
    """
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    load_before = _load_averages()
    start = time.perf_counter()
    child = context.Process(target=_child, args=(queue, function, args))
    child.start()
    watched, peak, cpu_seconds = psutil.Process(child.pid), 0, {}
    while child.is_alive() and queue.empty():
        try:
            peak = max(peak, _sample_tree(watched, cpu_seconds))
        except psutil.NoSuchProcess:
            break
        time.sleep(SAMPLE_EVERY_S)
    if queue.empty():
        child.join()
        if queue.empty():  # it died without a result; its traceback is on stderr
            raise RuntimeError(f"{function.__name__} failed with exit code {child.exitcode}")
    result = queue.get()
    child.join()
    return {**result, "process_seconds": round(time.perf_counter() - start, 2), "peak_rss_mb": round(peak / 2**20),
            "cpu_seconds": round(sum(cpu_seconds.values()), 1), "load_avg_before": load_before,
            "load_avg_after": _load_averages()}


def machine() -> dict[str, Any]:
    """The machine the numbers were taken on."""
    return {"cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform(), "python": platform.python_version()}


def write_results(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
