"""Lowest layer of the project: errors, file formats, config loading and data sources.

Every other package (features, clustering, pipeline) builds on these, so they stay
small and free of heavy imports.
"""

from data.errors import ConfigError, DataNotFoundError, DeepDPMError, InputError

__all__ = ["ConfigError", "DataNotFoundError", "DeepDPMError", "InputError"]
