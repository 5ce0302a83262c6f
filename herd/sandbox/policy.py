"""What the untrusted code is allowed: limits, the environment, the file system view.

Plain data, computed on the host and handed to the launcher as JSON, so the rules live in one place and
the launcher (which runs inside the namespaces) only applies them.
"""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass
from pathlib import Path

# Inside the sandbox. The work directory is a size-limited tmpfs: `files` are written there and read back,
# and a runaway program fills that tmpfs, never the host's disk.
WORKDIR = "/home/sandbox"
PROGRAM = "/.herd/main.py"

# The read-only system the code sees (an allow-list: everything else on the host, the repository and
# /root included, simply does not exist inside). Symlinks among them (Debian's merged /usr) are
# recreated as symlinks.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
DEVICES = ("null", "zero", "full", "random", "urandom")


@dataclass(frozen=True)
class Limits:
    """Per-run resource limits. Each exists because the kernel enforces it where Python cannot be trusted to.

    memory_mb: RLIMIT_AS, so a huge allocation fails with MemoryError instead of swapping the host;
    cpu_s: RLIMIT_CPU, a second clock next to the wall timeout for a process that spins;
    nproc: RLIMIT_NPROC, which stops a fork bomb (counted per user, and every run gets its own uid);
    fsize_mb: RLIMIT_FSIZE, no single file larger than this; nofile: open descriptors;
    tmpfs_mb: the size of the work directory and of /tmp (both RAM-backed tmpfs).
    """

    timeout_s: float = 10.0
    memory_mb: int = 512
    cpu_s: int = 10
    nproc: int = 64
    fsize_mb: int = 16
    nofile: int = 256
    tmpfs_mb: int = 64

    def rlimits(self) -> dict[str, int]:
        """RLIMIT name -> value (soft = hard, so the code cannot raise them again). Core dumps off: a
        crash must not write the process memory anywhere."""
        return {
            "RLIMIT_AS": self.memory_mb << 20,
            "RLIMIT_CPU": self.cpu_s,
            "RLIMIT_NPROC": self.nproc,
            "RLIMIT_FSIZE": self.fsize_mb << 20,
            "RLIMIT_NOFILE": self.nofile,
            "RLIMIT_CORE": 0,
        }


def apply_rlimits(limits: dict[str, int]) -> None:
    """Set each limit as soft and hard limit (used by the launcher and by the unsafe mode)."""
    for name, value in limits.items():
        resource.setrlimit(getattr(resource, name), (value, value))


def environment(home: str) -> dict[str, str]:
    """The whole environment of the code: an allow-list, never a copy of the host's, so no API key,
    token or path from the caller's environment reaches untrusted code."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": home,
        "USER": "sandbox",
        "LOGNAME": "sandbox",
        "TMPDIR": "/tmp",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONHASHSEED": "0",  # set/dict-of-str order is the same on every run: reruns reproduce
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def interpreter() -> tuple[str, str]:
    """(python executable, its installation prefix) for untrusted code: the base interpreter, never the
    virtual environment, which sits inside the project (the code must not see the project) and holds
    packages the code does not need. The prefix is bound read-only at its own path, because a
    relocated CPython would not find its shared library."""
    executable = getattr(sys, "_base_executable", None) or sys.executable
    return str(Path(executable).resolve()), str(Path(sys.base_prefix).resolve())
