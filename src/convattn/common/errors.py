"""Errors meant for people: one line, naming the file or flag and the fix."""


class UserError(Exception):
    """Bad input or environment. The CLI prints `convattn: error: <message>` and exits 2."""

    exit_code = 2
