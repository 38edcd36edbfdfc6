"""Official weights of the paper's evaluators. No package registry carries them.

The authors publish no checksums, so ``sha256`` is empty and ``size`` 0: the
model store takes these files only through ``sbpet models add <name> FILE``
after the user downloaded them from the source named here.
"""

from __future__ import annotations

from sbpet_bench.api import Asset

DEEPFACE_GENDER = "deepface-gender-pth"
ARCFACE = "insightface-arcface-r50"
COSFACE = "insightface-cosface-r100"
INCEPTION = "pytorch-fid-inception"

ASSETS = [
    Asset(name=DEEPFACE_GENDER, filename="paper/deepface/gender_model_weights.pth", sha256="", size=0,
          licence="MIT (deepface models)", official_only=True,
          sources=("https://github.com/serengil/deepface_models/releases/download/v1.0/gender_model_weights.pth",),
          description="deepface gender model (VGG-Face trunk + 2-way head), PyTorch state dict of deepface's torch backend"),
    Asset(name=ARCFACE, filename="paper/insightface/w600k_r50.onnx", sha256="", size=0,
          licence="InsightFace pretrained models: non-commercial research only", official_only=True,
          sources=("https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip",),
          description="insightface ArcFace ResNet-50 (WebFace600K), w600k_r50.onnx inside buffalo_l.zip: extract it, "
                      "then `sbpet models add`"),
    Asset(name=COSFACE, filename="paper/insightface/glint360k_cosface_r100.onnx", sha256="", size=0,
          licence="InsightFace pretrained models: non-commercial research only", official_only=True,
          sources=("https://github.com/deepinsight/insightface/tree/master/recognition/arcface_torch",),
          description="insightface CosFace iResNet-100 (Glint360K), the ONNX export listed in arcface_torch's model zoo"),
    Asset(name=INCEPTION, filename="paper/pt_inception-2015-12-05-6726825d.pth", sha256="", size=0,
          licence="Apache-2.0 (pytorch-fid; TensorFlow FID Inception weights)", official_only=True,
          sources=("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",),
          description="FID InceptionV3 weights of pytorch-fid (ported from TensorFlow's FID graph)"),
]
