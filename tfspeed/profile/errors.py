"""Errors raised by the profiler: all are `ValueError`s, so callers can catch one type."""


class ProfileError(ValueError):
    """Base class of every error the profiler raises on purpose."""


class InvalidModelError(ProfileError):
    """The model file is missing, of an unknown format, malformed, or cannot be loaded."""


class InputError(ProfileError):
    """The inputs (generated, `.npz`, text or shapes) do not fit the model."""
