"""Fixtures shared by every kind of test."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable

import pytest


@pytest.fixture
def open_descriptors() -> Callable[[], int]:
    """How many file descriptors this process holds open, now."""
    return lambda: len(os.listdir("/proc/self/fd"))


@pytest.fixture
def small_disk(tmp_path):
    """A real 128 KiB filesystem (tmpfs), so writes fail with ENOSPC as on a full disk."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)
