"""The one exception type for user mistakes (bad files, bad config).

Entry scripts catch it once and print its message as one line with a non-zero
exit; programming errors keep their traceback.
"""


class B2MError(Exception):
    """A user-facing error: the message names the file or key and what is wrong."""
