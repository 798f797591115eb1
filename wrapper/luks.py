"""The LUKS keys vault (docs/contract.md §7).

The vault is a file the caller names (or ``.v2v_luks_keys_vault.json`` in the
CALLER's home: the sudo caller's, not root's), opened WITH THE CALLER'S
RIGHTS (:mod:`wrapper.security.boundary`): what the caller cannot open
itself is refused with the errno text of its own open(), never read by root.
It must be a regular file, at most 1 MiB, owned by the caller or root and
closed to group and others (a vault others can read has leaked already).
Every problem is one line naming ``luks_keys_vault``; the content is never
part of a message.
"""
import errno
import os

from wrapper import jobinput
from wrapper.errors import JobError
from wrapper.security.text import oneline, short
from wrapper.security.boundary import CallerOpenError, CallerReadError, integrity_problem
from wrapper.security.secrets import Secret

VAULT_NAME = ".v2v_luks_keys_vault.json"
MAX_VAULT_SIZE = 1 << 20
KEY = "luks_keys_vault"


def default_vault(caller):
    """The default vault of ``caller`` (a boundary.Caller), or None when the
    caller has no home directory we know of."""
    return os.path.join(caller.home, VAULT_NAME) if caller.home else None


def read_vault(boundary, path, vm_name, optional=False, key=KEY):
    """Return ``((device, Secret), ...)`` for ``vm_name`` from the vault at
    ``path``, opened with the caller's rights through ``boundary``.  With
    ``optional`` (the default vault), a vault the caller finds absent is no
    vault: ``()``."""
    shown = oneline(path, 200)
    try:
        data, st = boundary.read(path, MAX_VAULT_SIZE)
    except CallerOpenError as e:
        if optional and e.errno in (errno.ENOENT, errno.ENOTDIR):
            return ()
        if e.errno == errno.EINVAL and "valid file name" in str(e):
            raise JobError(key, "the path of the LUKS keys vault is not a valid file name") from None
        if isinstance(e, CallerReadError) or e.errno in (errno.EFBIG, errno.EINVAL):
            raise JobError(key, "the LUKS keys vault %s %s" % (shown, oneline(e, 100))) from None
        raise JobError(key, "cannot open the LUKS keys vault %s: %s" % (shown, oneline(e, 100))) from None
    problem = integrity_problem(st, boundary.owners())
    if problem is None and st.st_mode & 0o077:
        problem = "must not be accessible by group or others (mode %04o)" % (st.st_mode & 0o7777)
    if problem:
        raise JobError(key, "the LUKS keys vault %s %s" % (shown, problem))
    vault = jobinput.parse_json_bytes(data, "the LUKS keys vault %s" % shown, key)
    return keys_for(vault, vm_name, key)


def keys_for(vault, vm_name, key=KEY):
    """The keys of ``vm_name`` in a decoded vault, checked."""
    if not isinstance(vault, dict):
        raise JobError(key, "the LUKS keys vault must be a JSON object")
    entries = vault.get(vm_name, [])
    if not isinstance(entries, list):
        raise JobError(key, "vault entry for %s must be an array" % short(vm_name))
    keys = []
    for i, entry in enumerate(entries):
        if not (isinstance(entry, dict) and isinstance(entry.get("device"), str)
                and isinstance(entry.get("key"), str) and entry["device"]):
            raise JobError(key, "vault entry %d for %s needs string 'device' and 'key'" % (i, short(vm_name)))
        # the device goes to virt-v2v's command line, the key to a file
        problem = jobinput.string_problem(entry["device"], jobinput.TEXT)
        if problem:
            raise JobError(key, "vault entry %d for %s: device %s" % (i, short(vm_name), problem))
        if jobinput.string_problem(entry["key"], jobinput.OPAQUE):
            raise JobError(key, "vault entry %d for %s: key %s" % (i, short(vm_name), jobinput.INVALID_MESSAGE))
        keys.append((entry["device"], Secret(entry["key"])))
    return tuple(keys)
