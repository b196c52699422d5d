"""Exceptions that carry a message a clinician or researcher can act on.

Every problem with the user's input is raised as :class:`InputError` (or a subclass)
whose message names the problem and what to do. The command line prints the message
on one line and exits non-zero; it never shows a traceback for these.
"""


class CTMuscleBoneError(Exception):
    """Base class of all errors raised on purpose by CTMuscleBone."""


class InputError(CTMuscleBoneError, ValueError):
    """The input (file, image, label map, parameter) cannot be used as given."""


class NotMeasurableError(CTMuscleBoneError):
    """A quantity cannot be measured on this case; the message gives the reason."""


class ModelError(CTMuscleBoneError):
    """A model card or its weights are invalid, mismatched or untrusted."""


class CancelledError(CTMuscleBoneError):
    """A long step (e.g. segmentation) was cancelled by the user."""


class MissingDependencyError(CTMuscleBoneError):
    """An optional package (an extra such as ``segmentation`` or ``reports``) is missing;
    the message names the package and how to install it."""
