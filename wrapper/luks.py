"""The LUKS keys vault (SPEC §7)."""
import json
import os
import stat

from wrapper.errors import JobError
from wrapper.secrets import Secret

VAULT_NAME = ".v2v_luks_keys_vault.json"


def default_vault(environ):
    home = environ.get("HOME") or os.path.expanduser("~")
    return os.path.join(home, VAULT_NAME)


def read_vault(path, vm_name, uid, key="luks_keys_vault"):
    """Return ``((device, Secret), ...)`` for ``vm_name`` from the vault at ``path``.

    The vault must be owned by ``uid`` and closed to group and others, or the
    job is refused (a readable vault means the keys may have leaked already).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        raise JobError(key, "cannot open the LUKS keys vault %s: %s" % (path, e.strerror))
    with os.fdopen(fd, "r", encoding="utf-8") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise JobError(key, "the LUKS keys vault %s is not a regular file" % path)
        if st.st_uid != uid:
            raise JobError(key, "the LUKS keys vault %s must be owned by uid %d" % (path, uid))
        if st.st_mode & 0o077:
            raise JobError(key, "the LUKS keys vault %s must not be accessible by group or others "
                                "(mode %03o)" % (path, st.st_mode & 0o777))
        try:
            vault = json.load(f)
        except ValueError as e:
            raise JobError(key, "the LUKS keys vault %s is not valid JSON (%s)" % (path, e))
    if not isinstance(vault, dict):
        raise JobError(key, "the LUKS keys vault %s must be a JSON object" % path)
    entries = vault.get(vm_name, [])
    if not isinstance(entries, list):
        raise JobError(key, "vault entry for %r must be an array" % vm_name)
    keys = []
    for i, entry in enumerate(entries):
        if not (isinstance(entry, dict) and isinstance(entry.get("device"), str)
                and isinstance(entry.get("key"), str) and entry["device"]):
            raise JobError(key, "vault entry %d for %r needs string 'device' and 'key'" % (i, vm_name))
        keys.append((entry["device"], Secret(entry["key"])))
    return tuple(keys)
