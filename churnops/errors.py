"""Errors a user can act on. The CLI prints them as one line and exits non-zero; handlers map
them to 4xx responses. Anything else is a bug and keeps its traceback."""


class ChurnOpsError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class NoChampionError(ChurnOpsError):
    """The registry has no champion yet."""


class ContractMismatchError(ChurnOpsError):
    """A model and the data (or the server) follow different contracts."""
