"""The one exception type for mistakes a user can fix (bad input, bad options, missing files)."""


class KTGError(Exception):
    """An error caused by the user's input; the CLI prints its message as one line, without a traceback.

    Programming errors stay ordinary exceptions so that their tracebacks reach the developer.
    """
