"""The errors a user can act on. The command line prints their message as one line (no
traceback) and exits with their ``exit_code``; any other exception is a bug in qmixlab. This
module imports nothing, so the command line can catch them without loading torch."""


class UserError(Exception):
    """Something the user can fix: a setting, a file, the machine (e.g. a full disk)."""

    exit_code = 2


class ConfigError(UserError, ValueError):
    """A configuration value or key is invalid; the message names it."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing, corrupt or does not match the run; the message names the file."""


class MissingPackageError(UserError, ImportError):
    """An optional package a chosen backend needs is not installed; the message names the pip
    command."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the run after saving (sacred records it as INTERRUPTED)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
