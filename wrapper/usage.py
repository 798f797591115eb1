"""Command lines a command does not take.

argparse prints its usage and exits 2 on a bad command line; every command of
the wrapper instead says it in one line of its own and exits with its own
status (a conversion's refusal is 1, ``status`` and ``metrics`` say 2).  The
parser here raises :class:`UsageError` for the command to report.
"""
import argparse

from wrapper.security.text import oneline


class UsageError(Exception):
    """A command line the command does not take; ``str()`` is one printable line
    (argparse's complaint quotes the arguments, which may hold anything)."""

    def __init__(self, message):
        super().__init__(oneline(message, 1000))


class Parser(argparse.ArgumentParser):
    """argparse's parser, raising :class:`UsageError` instead of exiting."""

    def error(self, message):
        raise UsageError(message)
