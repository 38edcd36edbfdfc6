"""The paper's evaluators on official weights: deepface gender, insightface ArcFace/CosFace, FID InceptionV3."""

from sbpet_bench import hookimpl


@hookimpl
def sbpet_register_classifiers():
    from .evaluators import DeepFaceGender

    return [DeepFaceGender]


@hookimpl
def sbpet_register_verifiers():
    from .evaluators import ArcFace, CosFace

    return [ArcFace, CosFace]


@hookimpl
def sbpet_register_featurizers():
    from .evaluators import InceptionFID

    return [InceptionFID]


@hookimpl
def sbpet_register_assets():
    from .assets import ASSETS

    return ASSETS
