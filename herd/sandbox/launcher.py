"""The sandbox's init: runs as pid 1 inside fresh namespaces, builds the code's world, runs it, cleans up.

Started by `unshare --pid --fork --kill-child --mount --net --ipc --uts` (see runner.py) as
`python -I -S launcher.py REQUEST_FD RESULT_FD`; it imports nothing from herd (the project is about to
disappear from view) and reads everything it needs, as JSON, from REQUEST_FD. Why each step:

1. A new root built from an allow-list (a tmpfs with read-only binds of /usr, /etc, the libraries and
   the Python installation), then pivot_root and detach the host's root: the repository, /root, /home,
   /work, other users' files and the host's /tmp are not hidden but absent, and nothing of the system
   can be modified. /tmp, /dev/shm and the work directory are private, size-limited tmpfs mounts.
   A fresh /proc shows only this pid namespace.
2. The code runs in a child: rlimits, then a per-run unprivileged uid/gid (root mode) or an emptied
   capability bounding set (user-namespace mode), then the seccomp filter, then exec of the plain
   interpreter with an allow-listed environment. Descriptors other than 0-2 are closed first.
3. This process stays pid 1 and enforces the wall clock. When the code's main process exits or its
   time is up, kill(-1, SIGKILL) removes every other process in the namespace (double-forked
   daemons included), and then this process exits, which tears the namespace down for good.
4. The work directory's regular files (bounded, symlinks skipped) go back with the exit status on
   RESULT_FD, because the tmpfs disappears with the namespace.
"""

from __future__ import annotations

import base64
import ctypes
import errno
import importlib.util
import json
import os
import signal
import socket
import stat
import sys
import time

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, AT_RECURSIVE = 0x1, 0x2, 0x8000
SYS_MOUNT_SETATTR, SYS_PIVOT_ROOT = 442, {"x86_64": 155, "aarch64": 41}
PR_CAPBSET_DROP = 24

libc = ctypes.CDLL(None, use_errno=True)


class SetupError(Exception):
    pass


def _check(result: int, what: str) -> None:
    if result != 0:
        e = ctypes.get_errno()
        raise SetupError(f"{what}: {os.strerror(e)}")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = (lambda s: s.encode() if s is not None else None)
    _check(libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {source} on {target}")


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def bind_readonly(source: str, target: str) -> None:
    """Recursive read-only bind. mount_setattr (Linux 5.12) covers submounts too; a plain remount, the
    fallback for older kernels, only the top mount."""
    mount(source, target, None, MS_BIND | MS_REC)
    attr = _MountAttr(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0, 0, 0)
    if libc.syscall(SYS_MOUNT_SETATTR, -100, target.encode(), AT_RECURSIVE, ctypes.byref(attr),
                    ctypes.sizeof(attr)) != 0:
        if ctypes.get_errno() != errno.ENOSYS:
            _check(-1, f"mount_setattr {target}")
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)


def tmpfs(target: str, size_mb: float, mode: str, extra: str = "", flags: int = MS_NOSUID | MS_NODEV) -> None:
    os.makedirs(target, exist_ok=True)
    mount("tmpfs", target, "tmpfs", flags, f"size={max(int(size_mb * 1024), 64)}k,mode={mode}{extra}")


def build_root(req: dict, new_root: str) -> None:
    """The code's file system (step 1 of the module docstring); ends with the host's root detached."""
    tmpfs(new_root, 1 + len(req["code"]) / 2**20, "0755")
    for d in req["system_dirs"]:
        target = new_root + d
        if os.path.islink(d):
            os.symlink(os.readlink(d), target)
        elif os.path.isdir(d):
            os.makedirs(target, exist_ok=True)
            bind_readonly(d, target)
    prefix = req["python_prefix"]
    if not any(prefix == d or prefix.startswith(d + "/") for d in req["system_dirs"]):
        os.makedirs(new_root + prefix, mode=0o755, exist_ok=True)
        bind_readonly(prefix, new_root + prefix)
    # /root exists (empty, or holding only the path to the interpreter) and cannot be listed.
    os.makedirs(new_root + "/root", exist_ok=True)
    os.chmod(new_root + "/root", 0o711 if prefix.startswith("/root/") else 0o700)
    os.makedirs(new_root + "/proc")
    mount("proc", new_root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    tmpfs(new_root + "/dev", 0.0625, "0755", flags=MS_NOSUID | MS_NOEXEC)
    for name in req["devices"]:
        path = f"{new_root}/dev/{name}"
        open(path, "w").close()
        mount(f"/dev/{name}", path, None, MS_BIND)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{new_root}/dev/{name}")
    owner = f",uid={req['uid']},gid={req['gid']}"
    size = req["tmpfs_mb"]
    # nr_inodes: a million empty files would cost no space but make reading the work dir back slow.
    inodes = ",nr_inodes=16384"
    tmpfs(new_root + "/dev/shm", size, "1777", inodes, flags=MS_NOSUID | MS_NODEV | MS_NOEXEC)
    tmpfs(new_root + "/tmp", size, "1777", inodes)
    tmpfs(new_root + req["workdir"], size, "0700", owner + inodes)
    for name, data in req["files"].items():
        path = os.path.join(new_root + req["workdir"], name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
    for dirpath, dirnames, filenames in os.walk(new_root + req["workdir"]):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), req["uid"], req["gid"])
    program = new_root + req["program"]
    os.makedirs(os.path.dirname(program), exist_ok=True)
    with open(program, "w", encoding="utf-8") as f:
        f.write(req["code"])
    os.chmod(program, 0o444)
    # pivot_root(".", ".") stacks the old root on the new one; detaching it leaves only the new root.
    os.chdir(new_root)
    _check(libc.syscall(SYS_PIVOT_ROOT[os.uname().machine], b".", b"."), "pivot_root")
    _check(libc.umount2(b".", MNT_DETACH), "detach the host root")
    os.chdir("/")
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)


def drop_privileges(req: dict) -> None:
    """Root mode: become the per-run uid (all capabilities go with uid 0). User-namespace mode: uid 0
    here is the caller outside; emptying the bounding set keeps exec from granting capabilities."""
    if req["mode"] == "root":
        os.setgroups([])
        os.setresgid(req["gid"], req["gid"], req["gid"])
        os.setresuid(req["uid"], req["uid"], req["uid"])
    else:
        for cap in range(64):
            if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                break


def run_child(req: dict, seccomp_filter, error_fd: int) -> None:
    """In the forked child: limits, identity, filter, exec. Never returns."""
    try:
        os.closerange(3, error_fd)
        os.closerange(error_fd + 1, 1 << 16)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # Python ignores these, and exec keeps ignored signals
            signal.signal(sig, signal.SIG_DFL)       # (subprocess's restore_signals does the same)
        import resource
        for name, value in req["rlimits"].items():
            resource.setrlimit(getattr(resource, name), (value, value))
        os.chdir(req["workdir"])
        drop_privileges(req)
        seccomp_filter.load()
        os.execve(req["python"], [req["python"], "-I", "-B", req["program"]], req["env"])
    except BaseException as e:  # noqa: BLE001 - reported to the host as a setup failure
        os.write(error_fd, f"{type(e).__name__}: {e}".encode())
    os._exit(127)


def wait_main(child: int, timeout_s: float) -> tuple[int | None, bool]:
    """Reap every process until `child` exits or the time is up: (its wait status or None, timed out)."""
    deadline = time.monotonic() + timeout_s
    while True:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return None, False
            if pid == 0:
                break
            if pid == child:
                return status, False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None, True
        signal.sigtimedwait([signal.SIGCHLD], remaining)


def kill_all() -> None:
    """Every process in this pid namespace but pid 1 gets SIGKILL; then reap them."""
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def collect_files(workdir: str, limit: int) -> tuple[dict[str, str], bool]:
    files, total, truncated = {}, 0, False
    for dirpath, _, filenames in os.walk(workdir):
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue
            with os.fdopen(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    continue
                data = f.read(limit - total + 1)
            if total + len(data) > limit:
                truncated = True
                continue
            total += len(data)
            files[os.path.relpath(path, workdir)] = base64.b64encode(data).decode()
    return files, truncated


def main(request_fd: int, result_fd: int) -> None:
    with os.fdopen(request_fd, "rb") as f:
        req = json.loads(f.read())
    out = os.fdopen(result_fd, "w")
    try:
        sys.path.insert(0, req["pyseccomp_dir"])
        # pyseccomp looks its libraries up with find_library, which runs ldconfig (~25 ms); the host
        # already knows their names.
        import ctypes.util
        known, find = req["libraries"], ctypes.util.find_library
        ctypes.util.find_library = lambda name: known.get(name) or find(name)
        spec = importlib.util.spec_from_file_location("herd_sandbox_seccomp", req["seccomp_module"])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        seccomp_filter = module.build()
        socket.sethostname("sandbox")
        build_root(req, req["staging"])
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])
        error_r, error_w = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(error_r)
            run_child(req, seccomp_filter, error_w)
        os.close(error_w)
        with os.fdopen(error_r, "rb") as f:
            failure = f.read()
        if failure:
            raise SetupError(f"starting the code: {failure.decode(errors='replace')}")
    except (SetupError, OSError, ImportError, ValueError) as e:
        json.dump({"setup_error": str(e)}, out)
        out.close()
        return
    status, timed_out = wait_main(child, req["timeout_s"])
    kill_all()
    files, files_truncated = collect_files(req["workdir"], req["max_files_bytes"])
    result: dict = {"timeout": timed_out, "files": files, "files_truncated": files_truncated}
    if status is not None and os.WIFEXITED(status):
        result["exit"] = os.WEXITSTATUS(status)
    elif status is not None and os.WIFSIGNALED(status):
        result["signal"] = os.WTERMSIG(status)
    json.dump(result, out)
    out.close()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
