"""Errors that mean "the user's input is wrong": the CLI prints them as one paragraph and exits 2."""


class ConfigError(ValueError):
    """A configuration value that cannot work, with the key and what was expected."""
