"""Exception types with one-line messages meant for people, not stack traces.

The command-line entry points catch `DeepDPMError`, print its message and exit with
status 2; the Python API lets it propagate so callers can catch a specific type.
"""


class DeepDPMError(Exception):
    """Base class for every error this project raises on purpose."""


class InputError(DeepDPMError, ValueError):
    """Bad user input: a file, an array's shape or values, a parameter."""


class DataNotFoundError(InputError, FileNotFoundError):
    """A file or data set that should exist does not (the message says where to put it)."""


class ConfigError(InputError):
    """An unknown or invalid configuration key or value (a kind of bad input)."""
