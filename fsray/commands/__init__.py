"""Subcommands of the fsray CLI (see fsray.cli)."""
