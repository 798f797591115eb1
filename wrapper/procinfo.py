"""What /proc says about a process, so that a recorded PID is never taken for
another process that later got the same number.

A PID alone is reused once its process is gone and reaped; the pair (PID,
start time) is not: the start time (``/proc/<pid>/stat`` field 22, clock
ticks since boot) of a process that reuses the number is later.  That pair is
only meaningful within one boot, hence :func:`boot_id`.

``/proc/<pid>/stat`` is ``pid (comm) state ppid pgrp ...``; ``comm`` may hold
spaces and parentheses, so the fields are counted after the *last* ``)``.
"""
import os
import signal

# indexes into the fields after "comm)": field 3 is the first one
_STATE, _PGRP, _START = 0, 2, 19


def _fields(pid, proc_root):
    try:
        with open("%s/%d/stat" % (proc_root, pid), "rb") as f:
            text = f.read().decode("ascii", "replace")
    except (OSError, TypeError, ValueError):
        return None
    fields = text.rsplit(")", 1)[-1].split()
    return fields if len(fields) > _START else None


def _running_start(pid, proc_root):
    """Start time of ``pid`` if it exists and is not a zombie (or dead), else None."""
    fields = _fields(pid, proc_root)
    if fields is None or fields[_STATE] in ("Z", "X", "x"):
        return None
    try:
        return int(fields[_START])
    except ValueError:
        return None


def start_time(pid, proc_root="/proc"):
    """Clock ticks since boot at which ``pid`` started; None if there is no such process."""
    fields = _fields(pid, proc_root)
    try:
        return None if fields is None else int(fields[_START])
    except ValueError:
        return None


def boot_id(proc_root="/proc"):
    """This boot's random id (a new one at every boot), or None if unknown."""
    try:
        with open(os.path.join(proc_root, "sys/kernel/random/boot_id")) as f:
            return f.read().strip() or None
    except OSError:
        return None


def running(pid, proc_root="/proc"):
    """True if ``pid`` exists and is not a zombie, whoever it belongs to (a
    recorded PID with no start time: prefer :func:`alive`)."""
    return _is_pid(pid) and _running_start(pid, proc_root) is not None


def alive(pid, start, proc_root="/proc"):
    """True only if ``pid`` exists, is not a zombie and started at ``start``."""
    if start is None or not _is_pid(pid):
        return False
    return _running_start(pid, proc_root) == start


def process_group_members(pgid, proc_root="/proc"):
    """PIDs whose process group is ``pgid`` (zombies included)."""
    pids = []
    if not _is_pid(pgid):
        return pids
    for entry in os.listdir(proc_root):
        if entry.isdigit():
            fields = _fields(int(entry), proc_root)
            if fields is not None and fields[_PGRP] == str(pgid):
                pids.append(int(entry))
    return pids


def signal_checked(pid, sig, start_ok, proc_root="/proc"):
    """Send ``sig`` to ``pid`` only if it is running and ``start_ok(its start
    time)``.  Returns True when sent.

    A pidfd pins the process before it is checked, so the signal cannot reach
    a process that took the number in between (without pidfds, kernels before
    5.3, the window is the few instructions between check and kill).
    """
    if not _is_pid(pid):
        return False
    pidfd = None
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except (AttributeError, OSError):
        pidfd = None
    try:
        start = _running_start(pid, proc_root)
        if start is None or not start_ok(start):
            return False
        if pidfd is None:
            os.kill(pid, sig)
        else:
            signal.pidfd_send_signal(pidfd, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        if pidfd is not None:
            os.close(pidfd)


def kill_group(pgid, leader_start, sig=signal.SIGKILL, proc_root="/proc"):
    """Signal what is left of the process group a leader that started at
    ``leader_start`` created (``setsid``/``setpgid``): the leader if it is
    still that process, and every member that started no earlier.  Nothing
    when the number now leads another process (the group is someone else's:
    a PID is not reused while a group still has it).  Returns the PIDs
    signalled."""
    leader = start_time(pgid, proc_root)
    if leader is not None and leader != leader_start:
        return []
    members = [pgid] + [p for p in process_group_members(pgid, proc_root) if p != pgid]
    return [p for p in members if signal_checked(
        p, sig, (lambda s: s == leader_start) if p == pgid else (lambda s: s >= leader_start),
        proc_root)]


def _is_pid(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
