"""Stability analysis of paired Future-Seed experiments.

Depends on numpy, scipy, pandas and matplotlib only: importable without torch or Ray.
"""
