"""The project's errors: everything a user can cause (a bad config, missing data, a model folder
that is not a model, a prompt longer than the context, ...) is a `SpartaError`, so a command
line catches one type, prints one line and exits with a status, never a traceback."""
from __future__ import annotations

import argparse


class SpartaError(Exception):
    """Base of the errors a user can cause; the message says what to change."""


class ConfigError(SpartaError, ValueError):
    """A config value that cannot work; the message names the key (config.a.b = value: why)."""


class DataError(SpartaError, ValueError):
    """A data source cannot give the instructions it was asked for (a missing file, an empty data
    set, a missing field, an unknown kind, a data set that cannot be fetched)."""


class CliError(SpartaError):
    """A command line's own flags are wrong."""


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors raise CliError (one line for the caller to print) instead of
    printing the usage and exiting."""

    def error(self, message):
        raise CliError(message)
