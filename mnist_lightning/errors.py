"""`UserError`: a message naming the key, file or value at fault and what to do, which the
entry points print instead of a traceback, exiting with status 2 (`cli.exit_on_user_error`).
"""


def one_line(error: BaseException | str, limit: int | None = None) -> str:
    """An exception's text (or a part of it) as one line for a message to quote (another
    library's may span lines), cut to `limit` characters; its type's name if it has no text."""
    text = printable(" ".join(str(error).split()) or type(error).__name__)
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."


def printable(text: object) -> str:
    """`text` (a file's name, a crafted file's keys) safe to print: a newline, an escape
    sequence a terminal would act on, or a byte of a name that is not UTF-8 is shown escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


class UserError(Exception):
    """Bad input from the user: printed as one paragraph, never as a traceback."""


class ConfigError(UserError):
    """A config value is out of range, of the wrong type or unknown."""


class DataError(UserError):
    """The MNIST files are missing, corrupt or could not be fetched."""


class CheckpointError(UserError):
    """A checkpoint or run directory is missing, corrupt or incompatible."""


class TrainingFailedError(UserError):
    """Training ran and went wrong (it diverged, it learned nothing); every other `UserError`
    refuses input and leaves files as they were, a run's train.log included."""
