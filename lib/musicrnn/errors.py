"""The one exception type for mistakes a user can fix."""


class MusicRNNError(Exception):
    """Bad input or a missing file: the message says what is wrong and what to do.

    The CLI prints it on one line and exits non-zero, without a traceback; notebooks show it as is.
    Library code raises it (or a subclass) for anything caused by the user's input, and lets real
    bugs raise their own exceptions.
    """
