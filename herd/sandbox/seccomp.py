"""The system-call filter: the kernel's last line when the other layers have a hole.

Namespaces hide the network and the host; the filter removes the calls that attack the kernel or
leave the sandbox: ptrace (reading other processes), mount/umount2/pivot_root/chroot (reshaping the
file system view), unshare/setns and namespace flags on clone (new user namespaces give root-like
capabilities), bpf, keyctl/add_key/request_key (kernel keyrings are shared across namespaces),
perf_event_open, userfaultfd, module and kexec calls, io_uring (its socket operations bypass this very
filter), and socket() for every family but AF_UNIX (no TCP/UDP/raw/netlink/packet even if a network
appeared). Denied calls fail with EPERM (EAFNOSUPPORT for sockets) rather than killing the process, so
the code sees an ordinary error and its traceback says what was refused. libseccomp kills a process
that uses a foreign system call ABI (32-bit int 0x80 on x86_64), which closes the classic bypass.

This module is loaded by path in the launcher (inside the namespaces), so it imports only the stdlib
and pyseccomp.
"""

from __future__ import annotations

import errno
import socket

import pyseccomp as sc

DENIED = (
    "ptrace", "process_vm_readv", "process_vm_writev",
    "mount", "umount2", "pivot_root", "chroot", "mount_setattr", "move_mount", "open_tree", "fsopen",
    "fsmount", "fsconfig", "fspick", "open_by_handle_at", "name_to_handle_at",
    "unshare", "setns",
    "bpf", "keyctl", "add_key", "request_key", "perf_event_open", "userfaultfd",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot",
    "swapon", "swapoff", "acct", "quotactl", "syslog", "iopl", "ioperm",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
)
# clone() flags that create namespaces; clone3 passes its flags in memory a filter cannot read, so it
# answers ENOSYS and glibc falls back to clone(), which is checked.
# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME.
CLONE_NS_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000, 0x00000080)


def build() -> sc.SyscallFilter:
    """The filter, not yet loaded (`.load()` applies it to the calling thread and its future children)."""
    f = sc.SyscallFilter(defaction=sc.ALLOW)
    for name in DENIED:
        try:
            f.add_rule(sc.ERRNO(errno.EPERM), name)
        except (ValueError, OSError, RuntimeError):  # a call this kernel/arch does not have
            continue
    f.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), "socket", sc.Arg(0, sc.NE, socket.AF_UNIX))
    for flag in CLONE_NS_FLAGS:  # one rule per flag: MASKED_EQ tests (flags & mask) == value
        f.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    return f
