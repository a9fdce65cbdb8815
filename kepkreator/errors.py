"""One exception type for every user-facing problem.

The CLI turns a KepKreatorError into a one-line message and a non-zero exit; anything else is a
bug and is allowed to show its traceback.
"""


class KepKreatorError(Exception):
    """A problem with the user's input (data, bundle, spec, option), not with the code."""


class DataError(KepKreatorError):
    """Missing, corrupt or unusable data files."""


class BundleError(KepKreatorError):
    """A model bundle that is missing, unreadable, or whose card does not match its model."""
