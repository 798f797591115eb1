"""The wrapper's small exception tree.

Helpers raise these; only ``cli`` turns them into exit codes and only the
monitor turns them into state-file messages.
"""


class WrapperError(Exception):
    """Base class for every error the wrapper raises on purpose.

    ``code``: the failure code of :data:`wrapper.causes.CATALOGUE` it names,
    or None (docs/contract.md §8).
    """

    code = None


class JobError(WrapperError):
    """The job was refused before anything started (exit code 1).

    ``key`` names the offending job key (or option) so the one-line message
    tells the caller what to fix.
    """

    def __init__(self, key, message, code=None):
        super().__init__(key, message)
        self.key = key
        self.message = message
        self.code = code

    def __str__(self):
        if self.key:
            return "%s: %s" % (self.key, self.message)
        return self.message


class CommandError(WrapperError):
    """An external command failed.  ``argv`` must already be secret-free."""

    def __init__(self, argv, rc, out="", err=""):
        super().__init__(argv, rc, out, err)
        self.argv = list(argv)
        self.rc = rc
        self.out = out
        self.err = err

    def __str__(self):
        detail = (self.err or self.out or "").strip().splitlines()
        tail = (": " + detail[-1]) if detail else ""
        return "%s exited with status %s%s" % (self.argv[0], self.rc, tail)


class ConversionError(WrapperError):
    """The conversion could not be run or finished badly."""

    def __init__(self, message, code=None):
        super().__init__(message)
        self.code = code


class ThrottleError(WrapperError):
    """A throttling value could not be parsed or applied."""
