"""Model-store assets of the latent backend: official weights only (no package registry carries them).

Official checksums are not published by the authors, so ``sha256`` is left
empty and ``size`` 0: the model store cannot download these files and only
takes them from ``sbpet models add <name> FILE`` after the user downloaded
them from the official source named in ``sources``.
"""

from __future__ import annotations

from sbpet_bench.api import Asset

GENERATOR = "stylegan2-ffhq-rosinality"
E4E = "e4e-ffhq-encode"
FUSION_NODES = ("all", "face", "skin_mouth", "bg_hair_clothes", "bg_clothes")
STYLEFUSION = {node: f"stylefusion-ffhq-{node.replace('_', '-')}" for node in FUSION_NODES}

_NC = "NVIDIA Source Code License-NC (StyleGAN2 FFHQ weights; non-commercial)"

ASSETS = [
    Asset(name=GENERATOR, filename="pridss/stylegan2-ffhq-config-f.pt", sha256="", size=0, licence=_NC,
          sources=("https://github.com/rosinality/stylegan2-pytorch",), official_only=True,
          description="StyleGAN2 FFHQ 1024 config-f generator converted by rosinality/stylegan2-pytorch "
                      "(stylegan2-ffhq-config-f.pt, a dict with g_ema); PriDSS latent backend"),
    *[Asset(name=STYLEFUSION[node], filename=f"pridss/stylefusion/ffhq/{node}.pt", sha256="", size=0,
            licence="MIT (StyleFusion code and weights), trained on StyleGAN2-FFHQ samples",
            sources=("https://github.com/OmerKafri/StyleFusion",), official_only=True,
            description=f"StyleFusion FFHQ FusionNet of node '{node}' (weights/ffhq/{node}.pt in the official "
                        "release); PriDSS latent backend")
      for node in FUSION_NODES],
    Asset(name=E4E, filename="pridss/e4e_ffhq_encode.pt", sha256="", size=0, licence=_NC + " via encoder4editing (MIT code)",
          sources=("https://github.com/omertov/encoder4editing",), official_only=True,
          description="encoder4editing (e4e) FFHQ encoder, e4e_ffhq_encode.pt: inverts real aligned faces into "
                      "W+ for the PriDSS latent backend (optional: synthetic originals need no encoder)"),
]
