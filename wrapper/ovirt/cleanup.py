"""After a failed or cancelled ``rhv_url`` upload: cancel the image transfers of
the disks this conversion created and remove those disks (docs/contract.md §8),
bounded in time, reporting problems instead of raising, so the conversion's
own error stays the one reported.  The engine is reached through
:mod:`wrapper.ovirt.api`'s connection helpers (same SDK, same masking).
"""
import logging
import re
import time

from wrapper.errors import WrapperError
from wrapper.ovirt.api import close, connect, explain, load_sdk, scrub

log = logging.getLogger(__name__)

# Image transfer phases (ovirtsdk4.types.ImageTransferPhase) in which a
# transfer no longer holds its disk, or is already being torn down by the
# engine: cancelling those is pointless and the engine refuses it.
_SETTLED_PHASES = frozenset({
    "cancelled", "cancelled_system", "cancelled_user",
    "finalizing_cleanup", "finalizing_failure", "finalizing_success",
    "finished_cleanup", "finished_failure", "finished_success",
})
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                      r"[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def remove_created_disks(access, disk_ids, *, timeout=300.0, clock=time.monotonic,
                         sleep=time.sleep, poll=2.0, request_timeout=30.0):
    """Cancel the image transfers of ``disk_ids`` and remove those disks.

    Only the listed disks (the ones this conversion created) are touched:
    only transfers whose disk or image id is listed are cancelled.  A disk
    the engine has already removed (cancelling a transfer removes its disk)
    counts as removed.  Locked disks are polled every ``poll`` seconds, all
    disks in turn, until ``timeout`` seconds have passed overall (each disk
    gets at least one attempt).  Never raises: every problem is logged and
    returned, so the caller's original error stays the one reported.
    """
    problems = []

    def problem(msg, *args):
        text = msg % args
        log.error("%s", text)
        problems.append(text)

    wanted = []
    for disk_id in disk_ids:
        disk_id = str(disk_id).strip().lower()
        if not _UUID_RE.match(disk_id):
            problem("not removing %r: not a disk id", disk_id)
        elif disk_id not in wanted:
            wanted.append(disk_id)
    if not wanted:
        return problems
    deadline = clock() + timeout
    try:
        sdk = load_sdk()
        conn = connect(access, timeout=min(request_timeout, max(timeout, 1.0)))
    except WrapperError as e:
        problem("cannot remove the disks created on the oVirt engine (%s): %s",
                ", ".join(wanted), e)
        return problems
    try:
        _cancel_transfers(sdk, access, conn, wanted, problem)
        _remove_disks(sdk, access, conn, wanted, timeout, deadline, clock, sleep, poll,
                      problem)
    except Exception as e:  # a bug or an SDK surprise must not mask the original error
        problem("removing the disks created on the oVirt engine failed: %s",
                scrub("%s: %s" % (type(e).__name__, e), access))
    finally:
        close(conn)
    return problems


def _cancel_transfers(sdk, access, conn, wanted, problem):
    transfers_service = conn.system_service().image_transfers_service()
    try:
        transfers = transfers_service.list()
    except sdk.Error as e:
        problem("cannot list the image transfers on the oVirt engine: %s",
                explain(sdk, access, e, False))
        return
    for transfer in transfers:
        # Transfers created by disk (virt-v2v 2.x) name the disk; older
        # clients (virt-v2v 1.x) named the image, with the disk's id.
        ids = {ref.id.lower() for ref in (transfer.disk, transfer.image)
               if ref is not None and ref.id}
        if not ids & set(wanted):
            continue
        phase = transfer.phase.value if transfer.phase is not None else "unknown"
        if phase in _SETTLED_PHASES:
            log.debug("image transfer %s of disk %s is %s: nothing to cancel",
                      transfer.id, "/".join(sorted(ids)), phase)
            continue
        try:
            transfers_service.image_transfer_service(transfer.id).cancel()
            log.info("cancelled image transfer %s (%s) of disk %s",
                     transfer.id, phase, "/".join(sorted(ids)))
        except sdk.NotFoundError:
            log.debug("image transfer %s is already gone", transfer.id)
        except sdk.Error as e:
            problem("cannot cancel image transfer %s of disk %s: %s", transfer.id,
                    "/".join(sorted(ids)), explain(sdk, access, e, False))


def _remove_disks(sdk, access, conn, wanted, timeout, deadline, clock, sleep, poll,
                  problem):
    disks_service = conn.system_service().disks_service()
    pending = {disk_id: "no attempt yet" for disk_id in wanted}
    while True:
        for disk_id in list(pending):
            why = _try_remove(sdk, access, disks_service.disk_service(disk_id), disk_id)
            if why is None:
                del pending[disk_id]
            else:
                if why != pending[disk_id]:
                    log.info("disk %s not removed yet: %s", disk_id, why)
                pending[disk_id] = why
        if not pending:
            return
        remaining = deadline - clock()
        if remaining <= 0:
            break
        sleep(min(poll, remaining))
    for disk_id, why in pending.items():
        problem("disk %s created by this conversion was left on the oVirt engine: "
                "%s (gave up after %g s)", disk_id, why, timeout)


def _try_remove(sdk, access, disk_service, disk_id):
    """One attempt; None when the disk is gone, else why it is still there."""
    try:
        disk = disk_service.get()
    except sdk.NotFoundError:
        log.info("disk %s is gone", disk_id)
        return None
    except sdk.Error as e:
        return "cannot read it: %s" % explain(sdk, access, e, False)
    status = disk.status.value if disk.status is not None else "unknown"
    if status == "locked":
        return "it is locked"
    try:
        disk_service.remove()
    except sdk.NotFoundError:
        log.info("disk %s is gone", disk_id)
        return None
    except sdk.Error as e:
        return "the engine refused to remove it: %s" % explain(sdk, access, e, False)
    log.info("removing disk %s (was %s)", disk_id, status)
    # The engine may delete asynchronously: confirm at once, then poll.
    try:
        disk_service.get()
    except sdk.NotFoundError:
        log.info("disk %s removed", disk_id)
        return None
    except sdk.Error as e:
        return "cannot read it after removal: %s" % explain(sdk, access, e, False)
    return "its removal was requested but it is still there"
