"""The exception type users see: a clear message instead of a traceback.

Every check on user input (config values, files, checkpoints, images) raises `UserError` with a
message that names the offending key, file or value and says what to do. The entry points catch
it (`mnist_lightning.cli.exit_on_user_error`), print the message and exit with status 2.
"""


class UserError(Exception):
    """Bad input from the user: printed as one paragraph, never as a traceback."""


class ConfigError(UserError):
    """A config value is out of range, of the wrong type or unknown."""


class DataError(UserError):
    """The MNIST files are missing, corrupt or could not be fetched."""


class CheckpointError(UserError):
    """A checkpoint or run directory is missing, corrupt or incompatible."""
