"""PrivacyProber (Rot, Grm, Peer & Štruc, IEEE TDSC 2023): recovery attacks and the detection metric.

Attackers: ``pp-a`` (autoencoder), ``pp-d`` (learned denoiser), ``pp-d-nlm`` (non-local
means, no training), ``pp-i`` (patch inpainting). Metric: ``recovery-detection``.
"""

from sbpet_bench import hookimpl


@hookimpl
def sbpet_register_attackers():
    from .attackers import PPAutoencoder, PPDenoiser, PPInpainter, PPNonLocalMeans

    return [PPAutoencoder, PPDenoiser, PPNonLocalMeans, PPInpainter]


@hookimpl
def sbpet_register_metrics():
    from .detection import RecoveryDetection

    return [RecoveryDetection]
