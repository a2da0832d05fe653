"""``fsray tune``: the Ray Tune + Optuna search of FS hyperparameters, with seed variance in the
objective.

``space`` (the validated search YAML and its Optuna distributions), ``driver`` (the search, step by
step: ``rundir`` the run directory and resume checks, ``tuning`` the Tune + Optuna selection,
``confirm`` and ``settle`` the fresh-seed stages, ``closing`` the summary), ``evaluate`` (one
configuration over seeds), ``objective`` and ``summary`` (statistics from the
records), ``store`` (results store and baseline cache), ``importance`` (which knob matters),
``simulated`` (the known-surface trainable). Kept free of imports: importing a submodule does not
import Ray (only ``tuning`` imports Ray Tune at the top).
"""
