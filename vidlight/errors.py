"""Exceptions vidlight raises for problems the user can fix.

The CLI turns any :class:`VidlightError` into a one-line message and exit status 1.
"""


class VidlightError(Exception):
    """A problem with the user's input, files or environment (not a bug in vidlight)."""


class WeightsError(VidlightError):
    """Weights that cannot be found, downloaded, verified or loaded."""


class MediaError(VidlightError):
    """A video that cannot be opened, decoded or written."""


# How to allow replacing an output, for the command line and for Python alike.
OVERWRITE = "pass -y/--overwrite (overwrite=True from Python)"
