"""Errors the analysis package raises for bad input (the CLI turns them into one line, exit 2)."""


class AnalysisInputError(ValueError):
    """Input that cannot be analysed; the message names the file/line or configuration."""
