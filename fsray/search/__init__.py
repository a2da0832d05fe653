"""``fsray tune``: the Ray Tune + Optuna search of FS hyperparameters, with seed variance in the
objective.

``space`` (the validated search YAML and its Optuna distributions), ``driver`` (the search),
``evaluate`` (one configuration over seeds), ``objective`` and ``summary`` (statistics from the
records), ``store`` (results store and baseline cache), ``importance`` (which knob matters),
``simulated`` (the known-surface trainable). Kept free of imports: importing a submodule does not
import Ray.
"""
