"""Stopping a child process: politely (SIGTERM), then firmly (SIGKILL) if it does not go."""

from __future__ import annotations

import subprocess


def stop_process(process: subprocess.Popen, timeout: float = 5.0) -> None:
    """Send SIGTERM and wait up to ``timeout`` seconds; then SIGKILL and wait again.

    A process that has already exited is only reaped.
    """
    if process.poll() is not None:
        process.wait()
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)
