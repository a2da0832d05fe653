"""pyproject.toml: the license is an SPDX expression (PEP 639), so setuptools builds the project
without its "project.license as a TOML table is deprecated" block; the extras the README names."""

from __future__ import annotations

from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_license_is_an_spdx_string_and_setuptools_reads_it():
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    # setuptools reads project.license as an SPDX expression from 77 on; older ones would reject it
    req = next(Requirement(r) for r in PYPROJECT["build-system"]["requires"]
               if Requirement(r).name == "setuptools")
    assert "76.9" not in req.specifier and "77.0" in req.specifier
    assert not any(c.startswith("License ::") for c in PYPROJECT["project"].get("classifiers", []))


def test_extras_install_the_dashboard_and_the_tracker():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert [Requirement(r).name for r in extras["dashboard"]] == ["optuna-dashboard"]
    assert [Requirement(r).name for r in extras["mlflow"]] == ["mlflow"]
    # the tracking test needs MLflow's client in the test set-up
    assert "mlflow-skinny" in {Requirement(r).name for r in extras["test"]}
