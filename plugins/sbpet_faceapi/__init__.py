"""face-api.js networks in PyTorch: the default gender evaluator and verifier, and a gender probe.

* ``faceapi-gender``: AgeGenderNet (TinyXception), P(male) from its gender head.
* ``faceapi-resnet``: FaceRecognitionNet (dlib's ResNet-34), 128-D descriptors.
* ``resnet-gender-probe``: logistic regression on ``faceapi-resnet`` embeddings,
  for PETs that need a gender classifier of their own.
* ``faceapi-gender-ft``: AgeGenderNet with its exit block and gender head fine-tuned on the
  training split (the informed attacker tier's deep classifier).

Weights: the npm package @vladmandic/face-api (MIT), fetched by the model store.
"""

from sbpet_bench import hookimpl


@hookimpl
def sbpet_register_assets():
    from .assets import ASSETS

    return ASSETS


@hookimpl
def sbpet_register_classifiers():
    from .finetune import FaceApiGenderFinetuned
    from .plugin import FaceApiGender, ResnetGenderProbe  # lazy: keeps `sbpet list` fast

    return [FaceApiGender, ResnetGenderProbe, FaceApiGenderFinetuned]


@hookimpl
def sbpet_register_verifiers():
    from .plugin import FaceApiResnet

    return [FaceApiResnet]
