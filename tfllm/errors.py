"""The one exception type that the CLI turns into a one-line message and exit code 2."""


class InputError(ValueError):
    """Bad user input: a file, line, field or option that cannot be used.

    The message names what was wrong and where (file and line when there is one);
    the CLI prints it on one line and exits with status 2.
    """
