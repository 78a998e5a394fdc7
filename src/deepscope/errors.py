"""deepscope's exceptions. Each carries one line a user can act on; the CLI prints it without a traceback."""


class DeepscopeError(Exception):
    """Base of every error deepscope raises on purpose."""


class ShapeError(DeepscopeError, ValueError):
    """An input of the wrong shape (the message names the layer, the expected and the actual shape)."""


class ArchitectureError(DeepscopeError, ValueError):
    """An architecture string that cannot be parsed (the message names the position of the fault)."""


class DataError(DeepscopeError, ValueError):
    """Data that cannot be used: a corrupt or truncated file, a checksum mismatch, labels out of range."""


class NonFiniteError(DeepscopeError, FloatingPointError):
    """A loss, activation or gradient that is NaN or infinite (the message names the first such layer)."""


class ConfigError(DeepscopeError, ValueError):
    """A setting that cannot work: a batch size or learning rate out of range, nothing to resume."""
