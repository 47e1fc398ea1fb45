"""CPU seconds of process trees, for the lab's measurements (psutil only: importable from the load virtualenv too)."""

from __future__ import annotations

from collections.abc import Iterable

import psutil


def cpu_seconds(processes: Iterable[psutil.Process], with_reaped_children: bool = False) -> float:
    total = 0.0
    for proc in processes:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
        if with_reaped_children:
            total += times.children_user + times.children_system
    return total


def tree_cpu(process: psutil.Process) -> float:
    """CPU seconds of `process`, of the children it has already reaped, and of its live descendants.

    Counting reaped children keeps the figure monotonic when a child exits during a run (a gunicorn
    worker recycled at max_requests, a PostgreSQL backend closing), instead of dropping its CPU.
    """
    try:
        descendants = process.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0
    return cpu_seconds([process], with_reaped_children=True) + cpu_seconds(descendants)


def tree_cpu_of_pid(pid: int) -> float | None:
    """`tree_cpu` of the process `pid`, or None when it is gone."""
    try:
        return tree_cpu(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return None
