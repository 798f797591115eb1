"""The LUKS keys vault (docs/contract.md §7).

The vault is a file the caller names (or ``$HOME/.v2v_luks_keys_vault.json``),
read by root: it is opened the way every untrusted file is
(:func:`wrapper.security.fsafe.read_untrusted`: never through a symlink, a FIFO or a
device never blocks, a regular file of one link, owned by the user running
the wrapper, bounded in size), and it must be closed to group and others.
Every problem is one line naming ``luks_keys_vault``.
"""
import errno
import os

from wrapper import jobinput
from wrapper.security import fsafe
from wrapper.errors import JobError
from wrapper.jobinput import oneline, short
from wrapper.security.secrets import Secret

VAULT_NAME = ".v2v_luks_keys_vault.json"
MAX_VAULT_SIZE = 1 << 20
KEY = "luks_keys_vault"


def default_vault(environ):
    home = environ.get("HOME") or os.path.expanduser("~")
    return os.path.join(home, VAULT_NAME)


def vault_exists(path, key=KEY):
    """Whether there is anything at ``path`` (a dangling symlink counts: it is
    then refused, not silently skipped)."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except (OSError, ValueError) as e:
        raise JobError(key, "cannot look for the LUKS keys vault %s: %s"
                       % (oneline(path, 200), oneline(getattr(e, "strerror", None) or e, 100))) from None
    return True


def read_vault(path, vm_name, uid, key=KEY):
    """Return ``((device, Secret), ...)`` for ``vm_name`` from the vault at ``path``.

    The vault must be owned by ``uid`` and closed to group and others, or the
    job is refused (a readable vault means the keys may have leaked already).
    """
    shown = oneline(path, 200)
    try:
        data, st = fsafe.read_untrusted(path, allowed_uids={uid}, max_size=MAX_VAULT_SIZE)
    except fsafe.Refused as e:
        if "owned by" in e.why:
            raise JobError(key, "the LUKS keys vault %s must be owned by uid %d (%s)"
                           % (shown, uid, oneline(e.why, 100))) from None
        raise JobError(key, "the LUKS keys vault %s %s" % (shown, oneline(e.why, 100))) from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise JobError(key, "the LUKS keys vault %s is a symbolic link" % shown) from None
        raise JobError(key, "cannot open the LUKS keys vault %s: %s"
                       % (shown, oneline(e.strerror or e, 100))) from None
    except ValueError:               # a NUL in the path
        raise JobError(key, "the path of the LUKS keys vault is not a valid file name") from None
    if st.st_mode & 0o077:
        raise JobError(key, "the LUKS keys vault %s must not be accessible by group or others "
                            "(mode %03o)" % (shown, st.st_mode & 0o777))
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
