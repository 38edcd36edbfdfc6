"""The face-api.js weights, as published in the npm package @vladmandic/face-api (MIT)."""

from __future__ import annotations

from sbpet_bench.api import Asset

PACKAGE = "@vladmandic/face-api@1.7.15"
# sha256 of the package's npm tarball (its sha512 integrity is WDMmK3Cf...HTXDw==): checked before it is opened.
TARBALL_SHA256 = "0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031"


def _asset(name: str, file: str, sha256: str, size: int, description: str) -> Asset:
    return Asset(name=name, filename=f"faceapi/{file}", sha256=sha256, size=size, licence="MIT",
                 sources=(f"npm:{PACKAGE}:model/{file}#sha256={TARBALL_SHA256}",), description=description, default=True)


ASSETS = [
    _asset("faceapi-age-gender-manifest", "age_gender_model-weights_manifest.json",
           "74b60bf3ebf981bf4e661e9cca3a185614e10b25d797118b62e2a68d3ff2569f", 8392,
           "face-api.js AgeGenderNet (TinyXception): TFJS weight manifest"),
    _asset("faceapi-age-gender-weights", "age_gender_model.bin",
           "49f92bbc0afef2342c4385e4a2b0acb6d7a727c6f0aa539499719a81acf9abaa", 429708,
           "face-api.js AgeGenderNet (TinyXception): uint8-quantized weights"),
    _asset("faceapi-recognition-manifest", "face_recognition_model-weights_manifest.json",
           "cbaffa501b0b9275a12b63357a6843e7e30c054e1c9151e1a5f879b26e32986b", 19615,
           "face-api.js FaceRecognitionNet (dlib ResNet-34): TFJS weight manifest"),
    _asset("faceapi-recognition-weights", "face_recognition_model.bin",
           "b413e420d6840b2775fba32008db6f3cddb07d485967fb42cfcf379c16a8c589", 6444032,
           "face-api.js FaceRecognitionNet (dlib ResNet-34): uint8-quantized weights"),
]

AGE_GENDER = ("faceapi-age-gender-manifest", "faceapi-age-gender-weights")
RECOGNITION = ("faceapi-recognition-manifest", "faceapi-recognition-weights")
