"""`Sandbox.run_python`: start the launcher in fresh namespaces, feed it, read it, classify the outcome.

Isolation modes, picked once per process (`isolation()`):
- "root": herd runs as root (our machines, CI). unshare creates pid, mount, network, IPC and UTS
  namespaces; the code runs under a per-run uid, so RLIMIT_NPROC (counted per uid) limits this run's
  processes alone and two runs cannot signal or read each other.
- "userns": not root but unprivileged user namespaces exist (most desktops): the same namespaces
  inside a user namespace where the caller is uid 0 without capabilities.
- "unsafe": no namespaces. Refused unless HERD_SANDBOX_UNSAFE=1, and then only rlimits, a fresh
  process group, an allow-listed environment and the timeout apply (a warning says so): the code can
  read the host's files and use its network.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from herd.sandbox import policy
from herd.sandbox.result import ExecResult, classify
from herd.sandbox.streams import Capture, collect, feed

UNSAFE_ENV = "HERD_SANDBOX_UNSAFE"
HERE = Path(__file__).resolve().parent
NAMESPACES = ["--pid", "--fork", "--kill-child", "--mount", "--net", "--ipc", "--uts", "--propagation", "private"]
UID_BASE, UID_SPAN = 1_000_000_000, 1_000_000_000
GRACE_S = 5.0  # the launcher enforces the timeout; the host kills it only if it does not


class SandboxUnavailable(RuntimeError):
    """This host cannot isolate code (no namespaces, no libseccomp) and unsafe mode was not asked for."""


class SandboxError(RuntimeError):
    """The sandbox itself failed to start (not the code): a bug or a host problem, never a score."""


def _unshare_prefix(mode: str) -> list[str]:
    unshare = shutil.which("unshare") or "/usr/bin/unshare"
    return [unshare, *(["--user", "--map-root-user"] if mode == "userns" else []), *NAMESPACES, "--"]


def _namespace_mode() -> tuple[str | None, list[str]]:
    """("root" or "userns", []) where this host can isolate code, else (None, the reasons)."""
    try:
        import pyseccomp  # noqa: F401 - needs libseccomp.so.2 (Debian: libseccomp2)
    except (ImportError, RuntimeError, OSError) as e:
        return None, [f"no seccomp ({e}; pip install pyseccomp, apt-get install libseccomp2)"]
    mode = "root" if os.geteuid() == 0 else "userns"
    try:
        probe = subprocess.run(_unshare_prefix(mode) + ["true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, [f"unshare failed: {e}"]
    if probe.returncode != 0:
        return None, [f"cannot create namespaces: {probe.stderr.decode(errors='replace').strip()}"]
    try:  # namespaces alone are not enough (a container may forbid mounting proc or tmpfs): one real run
        Sandbox(timeout_s=10)._run_isolated(mode, "pass", {}, None)
    except SandboxError as e:
        return None, [str(e)]
    return mode, []


@functools.lru_cache(maxsize=1)
def isolation() -> str:
    """"root", "userns" or "unsafe" (see the module docstring), decided once per process; raises
    SandboxUnavailable where there are no namespaces and HERD_SANDBOX_UNSAFE=1 is not set."""
    mode, reasons = _namespace_mode()
    if mode is not None:
        return mode
    if os.environ.get(UNSAFE_ENV) == "1":
        warnings.warn(f"herd sandbox: {'; '.join(reasons)}; {UNSAFE_ENV}=1, so code runs with rlimits and a "
                      "timeout only: it can read this machine's files and use its network", stacklevel=3)
        return "unsafe"
    raise SandboxUnavailable(f"herd sandbox cannot isolate code here: {'; '.join(reasons)}. Run as root (or with "
                             f"user namespaces), or set {UNSAFE_ENV}=1 to run untrusted code without isolation")


@functools.lru_cache(maxsize=1)
def _libraries() -> dict[str, str]:
    import ctypes.util

    return {name: path for name in ("c", "seccomp") if (path := ctypes.util.find_library(name))}


def _processes_of(uid: int) -> int:
    count = 0
    for entry in os.scandir("/proc"):
        try:
            count += entry.name.isdigit() and entry.stat().st_uid == uid
        except OSError:
            continue
    return count


def _check_name(name: str) -> str:
    path = PurePosixPath(name)
    if not name or path.is_absolute() or ".." in path.parts or name.endswith("/"):
        raise ValueError(f"sandbox file name {name!r} must be a relative path inside the work directory")
    return str(path)


class Sandbox:
    """Runs untrusted Python with the layers described in herd.sandbox (namespaces, read-only allow-listed
    root, rlimits, seccomp, environment allow-list, capped output, wall-clock timeout that kills all).

    timeout_s: wall clock for the code; memory_mb: its address space; max_output_bytes: kept of stdout
    and of stderr each; cpu_s defaults to the timeout rounded up plus 2 s (the wall clock, not
    the CPU limit, ends a loop that spins: its status is `timeout`); max_files_bytes: the files returned.
    """

    def __init__(self, timeout_s: float = 10, memory_mb: int = 512, max_output_bytes: int = 65536, *,
                 cpu_s: int | None = None, nproc: int = 64, fsize_mb: int = 16, nofile: int = 256,
                 tmpfs_mb: int = 64, max_files_bytes: int = 8 << 20) -> None:
        if timeout_s <= 0 or memory_mb <= 0 or max_output_bytes < 0:
            raise ValueError("Sandbox: timeout_s and memory_mb must be positive, max_output_bytes not negative")
        self.limits = policy.Limits(timeout_s=float(timeout_s), memory_mb=int(memory_mb),
                                    cpu_s=cpu_s or max(2, int(-(-timeout_s // 1)) + 2), nproc=nproc,
                                    fsize_mb=fsize_mb, nofile=nofile, tmpfs_mb=tmpfs_mb)
        self.max_output_bytes = max_output_bytes
        self.max_files_bytes = max_files_bytes

    def run_python(self, code: str, files: dict[str, str | bytes] | None = None,
                   stdin: str | None = None) -> ExecResult:
        """Run `code` as a script in a fresh sandbox; `files` are written into its work directory (its
        cwd and $HOME) first and every file there comes back in ExecResult.files."""
        payload = {_check_name(k): (v.encode() if isinstance(v, str) else bytes(v)) for k, v in (files or {}).items()}
        mode = isolation()
        if mode == "unsafe":
            return self._run_unsafe(code, payload, stdin)
        return self._run_isolated(mode, code, payload, stdin)

    def _run_isolated(self, mode: str, code: str, files: dict[str, bytes], stdin: str | None) -> ExecResult:
        import pyseccomp

        python, prefix = policy.interpreter()
        uid = UID_BASE + secrets.randbelow(UID_SPAN) if mode == "root" else 0
        rlimits = self.limits.rlimits()
        if mode == "userns":  # RLIMIT_NPROC counts the caller's own processes too: allow those on top
            rlimits["RLIMIT_NPROC"] += _processes_of(os.getuid())
        request = {
            "mode": mode, "uid": uid, "gid": uid, "code": code, "timeout_s": self.limits.timeout_s,
            "files": {k: base64.b64encode(v).decode() for k, v in files.items()},
            "rlimits": rlimits, "tmpfs_mb": self.limits.tmpfs_mb, "env": policy.environment(policy.WORKDIR),
            "python": python, "python_prefix": prefix, "system_dirs": list(policy.SYSTEM_DIRS),
            "devices": list(policy.DEVICES), "workdir": policy.WORKDIR, "program": policy.PROGRAM,
            "staging": "/tmp", "max_files_bytes": self.max_files_bytes,
            "pyseccomp_dir": str(Path(pyseccomp.__file__).parent), "seccomp_module": str(HERE / "seccomp.py"),
            "libraries": _libraries(),
        }
        req_r, req_w = os.pipe()
        res_r, res_w = os.pipe()
        # The launcher's own environment is empty too: it is pid 1 in the code's namespace.
        cmd = _unshare_prefix(mode) + [sys.executable, "-I", "-S", str(HERE / "launcher.py"), str(req_r), str(res_w)]
        start = time.monotonic()
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(req_r, res_w),
                                    env={"PATH": "/usr/bin:/bin"}, start_new_session=True)
        finally:
            os.close(req_r)
            os.close(res_w)
        writes = [(req_w, json.dumps(request).encode())]
        if stdin is not None:
            writes.append((os.dup(proc.stdin.fileno()), stdin.encode()))
            proc.stdin.close()
        feeder = feed(writes)
        backstop: list[bool] = []

        def kill() -> None:  # the launcher missed its own deadline: SIGKILL unshare, whose death kills
            backstop.append(True)  # the launcher (--kill-child), whose death empties the pid namespace
            proc.kill()

        captures = self._collect(proc, {"result": res_r}, start + self.limits.timeout_s + GRACE_S, kill)
        proc.wait()
        feeder.join(timeout=1)
        wall = time.monotonic() - start
        raw = bytes(captures["result"].data)
        if not raw:  # the launcher did not report: killed by our backstop (a timeout) or by someone else
            if proc.returncode < 0:
                return self._result(captures, None, -proc.returncode, bool(backstop), {}, False, wall)
            raise SandboxError(f"sandbox launcher died ({proc.returncode}): "
                               f"{captures['stderr'].tail.decode(errors='replace').strip()}")
        result = json.loads(raw)
        if "setup_error" in result:
            raise SandboxError(f"sandbox setup failed: {result['setup_error']}")
        out_files = {k: base64.b64decode(v) for k, v in result["files"].items()}
        return self._result(captures, result.get("exit"), result.get("signal"), result["timeout"], out_files,
                            result["files_truncated"], wall)

    def _collect(self, proc: subprocess.Popen, extra: dict[str, int], deadline: float,
                 on_deadline: Callable[[], None]) -> dict[str, Capture]:
        fds = {"stdout": proc.stdout.fileno(), "stderr": proc.stderr.fileno(), **extra}
        caps = {"stdout": self.max_output_bytes, "stderr": self.max_output_bytes,
                "result": 4 * self.max_files_bytes + (1 << 20)}  # base64 files + JSON
        try:
            return collect(fds, caps, deadline, on_deadline)
        finally:
            proc.stdout.close()
            proc.stderr.close()
            for fd in extra.values():
                os.close(fd)

    def _result(self, captures: dict[str, Capture], exit_code: int | None, signal: int | None, timed_out: bool,
                files: dict[str, bytes], files_truncated: bool, wall: float) -> ExecResult:
        out, err = captures["stdout"], captures["stderr"]
        status, returncode = classify(exit_code, signal, timed_out, err.tail)
        return ExecResult(status, returncode, out.data.decode(errors="replace"), err.data.decode(errors="replace"),
                          files, wall, out.truncated or err.truncated or files_truncated)

    def _run_unsafe(self, code: str, files: dict[str, bytes], stdin: str | None) -> ExecResult:
        """rlimits, a new session (so the timeout can kill the process group), the environment allow-list,
        a temporary work directory. No isolation of files, network or processes that leave the group."""
        python, _ = policy.interpreter()
        rlimits = self.limits.rlimits()
        with tempfile.TemporaryDirectory(prefix="herd-sandbox-") as tmp:
            workdir, program = Path(tmp, "work"), Path(tmp, "main.py")
            workdir.mkdir()
            program.write_text(code, encoding="utf-8")
            for name, data in files.items():
                (workdir / name).parent.mkdir(parents=True, exist_ok=True)
                (workdir / name).write_bytes(data)
            start = time.monotonic()
            proc = subprocess.Popen([python, "-I", "-B", str(program)], cwd=workdir,
                                    env=policy.environment(str(workdir)),
                                    stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                    preexec_fn=lambda: policy.apply_rlimits(rlimits))
            feeder = None
            if stdin is not None:
                feeder = feed([(os.dup(proc.stdin.fileno()), stdin.encode())])
                proc.stdin.close()
            timed_out = []

            def kill() -> None:
                timed_out.append(True)
                try:
                    os.killpg(proc.pid, 9)
                except ProcessLookupError:
                    pass

            captures = self._collect(proc, {}, start + self.limits.timeout_s, kill)
            proc.wait()
            if feeder:
                feeder.join(timeout=1)
            wall = time.monotonic() - start
            out_files, total = {}, 0
            for path in sorted(p for p in workdir.rglob("*") if p.is_file() and not p.is_symlink()):
                data = path.read_bytes()[: self.max_files_bytes - total + 1]
                if total + len(data) <= self.max_files_bytes:
                    total += len(data)
                    out_files[str(path.relative_to(workdir))] = data
        rc = proc.returncode
        return self._result(captures, rc if rc >= 0 else None, -rc if rc < 0 else None, bool(timed_out),
                            out_files, False, wall)
