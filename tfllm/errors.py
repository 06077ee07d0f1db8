"""The one exception type that the CLI turns into a one-line message and exit code 2."""

from tfllm_serving.errors import InvalidInput


# A kind of the server's InvalidInput (its HTTP 400), so the TF-free code that training and
# serving share (tfllm_serving.wordpiece, .tagging) raises one family the CLI catches.
class InputError(InvalidInput, ValueError):
    """Bad user input: a file, line, field or option that cannot be used.

    The message names what was wrong and where (file and line when there is one);
    the CLI prints it on one line and exits with status 2.
    """
