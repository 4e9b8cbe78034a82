"""Argument checks shared by the configs: errors name the argument, what was expected, and echo what was received."""


def positive_int(name: str, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"Received an invalid value for `{name}`, expected a positive integer. "
                         f"Received: {name}={value!r}")
    return value


def fraction(name: str, value, what: str = "a float in [0, 1)"):
    """A float in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"Received an invalid value for `{name}`, expected {what}. Received: {name}={value!r}")
    return value


def fields(obj, names, check):
    for name in names:
        check(name, getattr(obj, name))
