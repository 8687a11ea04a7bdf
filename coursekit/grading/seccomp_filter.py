"""A seccomp filter for a grading job: the system calls student code has no use for, refused with EPERM.

Installed by the job's process on itself (``warm_server.py``), after it dropped its uid and set ``no_new_privs``,
before any cell runs; every process it starts inherits it. Standard library only (it runs in the sandbox).

Refused: new namespaces (``unshare``, ``setns``, ``clone`` with a namespace flag; ``clone3`` says ENOSYS so
that libc falls back to ``clone``, as Docker's profile does), mounts, ``ptrace`` and reading or writing another
process's memory, kernel keyrings, BPF, ``userfaultfd``, ``perf_event_open``, ``io_uring``, loading kernel
modules or kernels, handles to files by number, and any system call of another ABI (32-bit, x32). In mode
"container" (no network namespace of its own) also every socket but a Unix one: no network.

x86_64 only: elsewhere ``job_filter`` returns None and no filter is installed (the other layers still hold).
"""
from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO, SECCOMP_RET_KILL_PROCESS = 0x7FFF0000, 0x00050000, 0x80000000
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
NAMESPACE_FLAGS = 0x7E020080        # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWTIME
AF_UNIX = 1

# x86_64 numbers
REFUSED_X86_64 = {
    "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312, "pidfd_getfd": 438,
    "unshare": 272, "setns": 308, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "mount_setattr": 442, "keyctl": 250, "add_key": 248, "request_key": 249, "bpf": 321, "userfaultfd": 323,
    "perf_event_open": 298, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "kexec_load": 246, "kexec_file_load": 320, "init_module": 175, "finit_module": 313, "delete_module": 176,
    "open_by_handle_at": 304, "name_to_handle_at": 303, "acct": 163, "swapon": 167, "swapoff": 168,
    "reboot": 169, "sethostname": 170, "setdomainname": 171, "iopl": 172, "ioperm": 173, "quotactl": 179,
}
CLONE, CLONE3, SOCKET = 56, 435, 41

# classic BPF
LD_W_ABS, JEQ_K, JGE_K, JSET_K, RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
OFFSET_NR, OFFSET_ARCH, OFFSET_ARG0 = 0, 4, 16


def _op(code, k, jt=0, jf=0) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def job_filter(block_network: bool) -> bytes | None:
    """The filter as a BPF program (``struct sock_filter`` array), or None where it is not made (not x86_64)."""
    if platform.machine() != "x86_64":
        return None
    eperm = SECCOMP_RET_ERRNO | errno.EPERM
    prog = [_op(LD_W_ABS, OFFSET_ARCH),
            _op(JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
            _op(RET_K, SECCOMP_RET_KILL_PROCESS),      # a 32-bit system call: never made by Python here
            _op(LD_W_ABS, OFFSET_NR),
            _op(JGE_K, X32_SYSCALL_BIT, 0, 1),
            _op(RET_K, eperm)]
    for nr in sorted(REFUSED_X86_64.values()):
        prog += [_op(JEQ_K, nr, 0, 1), _op(RET_K, eperm)]
    prog += [_op(JEQ_K, CLONE3, 0, 1), _op(RET_K, SECCOMP_RET_ERRNO | errno.ENOSYS),
             _op(JEQ_K, CLONE, 0, 3),           # not clone: on past its check (the socket check or ALLOW)
             _op(LD_W_ABS, OFFSET_ARG0),        # clone's flags (their low 32 bits hold every namespace flag)
             _op(JSET_K, NAMESPACE_FLAGS, 0, 1 + 4 * block_network),     # no flag: on to ALLOW
             _op(RET_K, eperm)]
    if block_network:
        prog += [_op(JEQ_K, SOCKET, 0, 3),
                 _op(LD_W_ABS, OFFSET_ARG0),
                 _op(JEQ_K, AF_UNIX, 1, 0),
                 _op(RET_K, SECCOMP_RET_ERRNO | errno.EACCES)]
    prog.append(_op(RET_K, SECCOMP_RET_ALLOW))
    return b"".join(prog)


def install(program: bytes) -> None:
    """Install ``program`` on the calling thread (needs ``no_new_privs`` or CAP_SYS_ADMIN); raises OSError."""
    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

    buf = ctypes.create_string_buffer(program, len(program))
    fprog = SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_char_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp filter: {os.strerror(err)}")
