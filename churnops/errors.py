"""Errors a user can act on. The CLI prints them as one line and exits non-zero; handlers map
them to 4xx responses. Anything else is a bug and keeps its traceback."""


class ChurnOpsError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class NoChampionError(ChurnOpsError):
    """The registry has no champion yet."""


class ContractMismatchError(ChurnOpsError):
    """A model and the data (or the server) follow different contracts."""


class DatabaseUnavailableError(ChurnOpsError):
    """The database could not be reached (refused, timed out, connection lost): worth a retry,
    unlike a refused login or a missing database. Its class name is the error name Step
    Functions sees when a Lambda step raises it, so the retrain flow's Retry lists it."""
