"""Typed, problem-collecting access to the job object (docs/contract.md §3).

:class:`JobReader` is what :mod:`wrapper.config` reads every key through: a
wrong type is a problem, never a coercion; problems are collected (so
``--validate`` can list them all), in the order of the keys; a key whose
strings break :mod:`wrapper.jobinput`'s rules is reported once, when it is
read.  Secret files and paths the job names are opened through the caller's
:class:`~wrapper.security.boundary.Boundary`, never with root's rights.
"""
from wrapper import jobinput
from wrapper.errors import JobError
from wrapper.security.text import oneline, short
from wrapper.security.boundary import CallerOpenError

KNOWN_KEYS = frozenset((
    "vm_name", "transport_method", "vmware_uri", "vmware_password", "vmware_fingerprint",
    "ssh_key", "rhv_url", "rhv_password", "rhv_cluster", "rhv_storage", "rhv_cafile",
    "insecure_connection", "export_domain", "output_dir", "output_format", "allocation",
    "network_mappings", "source_disks", "virtio_win", "install_drivers", "throttling",
    "luks_keys_vault", "daemonize", "ssh_key_file", "vmware_password_file", "rhv_password_file",
))
# a secret may be given inline or as the path of a file holding it (a mounted
# Kubernetes Secret): key -> the key naming its file
SECRET_FILE_KEYS = {"ssh_key": "ssh_key_file", "vmware_password": "vmware_password_file",
                    "rhv_password": "rhv_password_file"}
MAX_SECRET_FILE_BYTES = 1 << 16
# the kind of every known key's strings (jobinput.string_problem); TEXT if absent
STRING_KINDS = {"ssh_key": jobinput.KEY, "vmware_password": jobinput.PASSWORD,
                "rhv_password": jobinput.PASSWORD}

class JobReader:
    """Typed access to the job dict that records problems instead of raising."""

    def __init__(self, job, boundary):
        self.job = job
        self.boundary = boundary
        self.problems = []
        # key -> (path, message) of its first bad string, reported when the
        # key is read (so problems keep the order of the keys) or at the end
        self.bad = {}
        for key, value in job.items():
            kind = STRING_KINDS.get(key, jobinput.TEXT) if key in KNOWN_KEYS else jobinput.OPAQUE
            found = jobinput.first_string_problem(value, key if key in KNOWN_KEYS else oneline(key, 60), kind)
            if found:
                self.bad[key] = found
        self.reported = set()

    def problem(self, key, message):
        self.problems.append(JobError(key, message))

    def report_bad(self, key):
        """Report the bad string of ``key`` once; True if it has one."""
        if key not in self.bad:
            return False
        if key not in self.reported:
            self.reported.add(key)
            self.problem(*self.bad[key])
        return True

    def get(self, key, types, type_name, required=True, default=None):
        if self.report_bad(key):
            return default
        if key not in self.job or (self.job[key] is None and not required):
            if required:
                self.problem(key, "is required")
            return default
        value = self.job[key]
        # bool is an int in Python: never let True pass as a number or vice versa
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            self.problem(key, "must be %s, not %s" % (type_name, json_type(value)))
            return default
        return value

    def string(self, key, required=True, default=None, nonempty=True):
        value = self.get(key, (str,), "a string", required, default)
        if isinstance(value, str) and nonempty and not value.strip() and key in self.job:
            self.problem(key, "must not be empty")
            return default
        return value

    def secret(self, key, required=True):
        """The text of the secret ``key``: inline, or read from the file its
        ``<key>_file`` names (a trailing line break of a password file is not
        part of the password)."""
        file_key = SECRET_FILE_KEYS[key]
        if file_key not in self.job:
            return self.string(key, required=required, nonempty=STRING_KINDS[key] != jobinput.PASSWORD)
        if key in self.job:
            self.problem(file_key, "cannot be given together with %s (give one of them)" % key)
            return None
        path = self.string(file_key)
        if not path:
            return None
        try:
            data = jobinput.read_supplied_file(self.boundary, path, "the %s file" % key, file_key,
                                               MAX_SECRET_FILE_BYTES, private=True)
            text = data.decode("utf-8")
        except JobError as e:
            self.problems.append(e)
            return None
        except UnicodeDecodeError:
            self.problem(file_key, "the %s file is not valid UTF-8" % key)
            return None
        kind = STRING_KINDS[key]
        if kind == jobinput.PASSWORD:
            text = text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text
        elif not text.strip():
            self.problem(file_key, "the %s file is empty" % key)
            return None
        problem = jobinput.string_problem(text, kind)
        if problem:
            self.problem(file_key, "the content of the %s file %s" % (key, problem))
            return None
        return text

    def supplied(self, key, path, what, limit):
        """The bytes of a (non-secret) file the job names, read with the
        caller's rights; None and a problem naming ``key`` if it cannot be."""
        try:
            return jobinput.read_supplied_file(self.boundary, path, what, key, limit)
        except JobError as e:
            self.problems.append(e)
            return None

    def check_path(self, key, path, what, dirs=False):
        """Whether the caller can open ``path`` (a regular file, or a
        directory with ``dirs``); a problem naming ``key`` if not, saying only
        what the caller's own open() said."""
        try:
            self.boundary.check(path, dirs)
            return True
        except CallerOpenError as e:
            self.problem(key, "cannot open %s %s: %s" % (what, oneline(path, 200), oneline(e, 100)))
            return False

    def check_dir(self, key, path, what):
        """Whether the caller can reach the directory ``path``; a problem
        naming ``key`` with the errno of the caller's own open() if not."""
        try:
            self.boundary.check_dir(path)
            return True
        except CallerOpenError as e:
            self.problem(key, "cannot use %s %s: %s" % (what, oneline(path, 200), oneline(e, 100)))
            return False

    def boolean(self, key, default):
        return self.get(key, (bool,), "true or false", False, default)

    def choice(self, key, choices, default=None):
        value = self.string(key, required=False, default=default)
        if value is not None and value not in choices:
            self.problem(key, "must be one of %s, not %s" % (", ".join(choices), short(value)))
            return default
        return value


def json_type(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
