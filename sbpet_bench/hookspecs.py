"""Hook specifications: the only way plugins reach the harness.

A plugin module (found through the ``sbpet`` entry-point group, or named with
``--plugin``) implements any of these hooks with ``@hookimpl`` and returns the
plugin *classes* it provides. Classes, not instances: the harness creates them
only for the runs that use them, so a plugin whose heavy dependency is missing
breaks only those runs.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("sbpet")
hookimpl = pluggy.HookimplMarker("sbpet")


@hookspec
def sbpet_register_pets() -> list[type]:
    """Return PET classes (subclasses of ``sbpet_bench.api.PET``)."""


@hookspec
def sbpet_register_attackers() -> list[type]:
    """Return recovery-attack classes (subclasses of ``sbpet_bench.api.Attacker``)."""


@hookspec
def sbpet_register_classifiers() -> list[type]:
    """Return gender-classifier classes (subclasses of ``sbpet_bench.api.GenderClassifier``)."""


@hookspec
def sbpet_register_verifiers() -> list[type]:
    """Return face-verifier classes (subclasses of ``sbpet_bench.api.Verifier``)."""


@hookspec
def sbpet_register_featurizers() -> list[type]:
    """Return photo-realism feature extractors (subclasses of ``sbpet_bench.api.Featurizer``)."""


@hookspec
def sbpet_register_metrics() -> list[type]:
    """Return metric classes (subclasses of ``sbpet_bench.api.Metric``)."""


@hookspec
def sbpet_register_dataset_sources() -> list[type]:
    """Return data-set readers (subclasses of ``sbpet_bench.api.DatasetSource``)."""


@hookspec
def sbpet_register_aligners() -> list[type]:
    """Return face aligners (subclasses of ``sbpet_bench.api.Aligner``)."""


@hookspec
def sbpet_register_assets() -> list:
    """Return model-store assets (``sbpet_bench.api.Asset``) that plugins load by name."""
