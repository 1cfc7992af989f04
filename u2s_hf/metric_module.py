"""What every `evaluate` module in metrics/ shares: its settings and when its models load.

A module declares its settings with their defaults (`SETTINGS`). They are given at `evaluate.load(path, **settings)`
or at `compute(..., **settings)`, as the Hub's own metrics take them; a compute-time setting wins for that call. The
models the load-time settings name are loaded once, when `evaluate.load` prepares the module
(`_download_and_prepare`), so a model that cannot be loaded fails there; calls that keep those settings reuse them
(every model is kept once per process: `runtime.cached_model`).
"""

from __future__ import annotations

from typing import ClassVar

import evaluate


class U2sMetric(evaluate.Metric):
    """A module subclasses it by attribute (`metric_module.U2sMetric`): evaluate.load takes the first Metric class
    in the module's namespace as the module's own."""

    SETTINGS: ClassVar[dict] = {}  # name -> default

    def __init__(self, **kwargs):
        given = {name: kwargs.pop(name) for name in list(kwargs) if name in self.SETTINGS}
        super().__init__(**kwargs)
        self.settings = {**self.SETTINGS, **given}

    def _download_and_prepare(self, dl_manager):
        self.load_models(self.settings)

    def load_models(self, settings: dict) -> None:
        """Load the models `settings` name (nothing, for a module without models)."""

    def settings_for(self, given: dict) -> dict:
        """The settings of one compute call: the module's, with those `given` to compute in their place."""
        unknown = sorted(set(given) - set(self.SETTINGS))
        if unknown:
            raise TypeError(f"{self.name} has no setting {', '.join(unknown)}; settings: {', '.join(self.SETTINGS)}")
        return {**self.settings, **given}
