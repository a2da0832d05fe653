"""The stability report: build the statistics table, then render it five ways.

``build(loaded, options)`` (``analysis.summary``) turns a ``loaders.Loaded`` table into a ``Report``:
one summary row per (stage, task, configuration) with its statistics, multiplicity adjustments,
winner's-curse flag, breakthrough split and verdict. ``render(report, fmt)``
(``analysis.renderers``) prints it as a terminal table, markdown, a self-contained HTML page (plots
of ``analysis.plots`` embedded as base64 PNG), CSV or JSON. This module only gathers the two.
"""

from __future__ import annotations

from .renderers import FORMATS, RENDERERS, fmt, plan_lines, render, table_rows
from .summary import METRICS, Report, ReportOptions, build, group_columns

__all__ = ["FORMATS", "METRICS", "RENDERERS", "Report", "ReportOptions", "build", "fmt",
           "group_columns", "plan_lines", "render", "table_rows"]
