"""PrivacyNet: a semi-adversarial GAN that obfuscates gender while keeping identity, trained in the harness."""

from sbpet_bench import hookimpl


@hookimpl
def sbpet_register_pets():
    from .plugin import PrivacyNet

    return [PrivacyNet]
