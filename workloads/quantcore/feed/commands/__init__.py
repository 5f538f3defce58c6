"""The feed's `quantcore` subcommands: feed, replay, record (argument parsing only)."""
