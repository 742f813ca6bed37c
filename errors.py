"""User-facing errors: each carries one line that names the culprit (file, key, value).

Tools catch :class:`UserError`, print ``error: <message>`` on stderr and exit with status 2;
anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user: a one-line message naming the file, key or value at fault."""


class ConfigError(UserError):
    """Unknown key, wrong type or impossible value in a config or a command-line override."""


class DataError(UserError):
    """Missing, empty or malformed dataset files or annotations."""


class WeightsError(UserError):
    """Pretrained weights that are missing, corrupt or do not fit the model."""


class CheckpointError(UserError):
    """A checkpoint that is missing or belongs to another task / backbone."""
