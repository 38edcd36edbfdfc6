"""Weight-free evaluators: trained on the run's training split in seconds, no download needed.

They are the fallback when the deep evaluators' models are absent, not a replacement for them.
"""

from sbpet_bench import hookimpl


@hookimpl
def sbpet_register_classifiers():
    from .cnn import CnnGender
    from .evaluators import HogLogisticGender

    return [HogLogisticGender, CnnGender]


@hookimpl
def sbpet_register_verifiers():
    from .evaluators import PcaWhitenedPixels

    return [PcaWhitenedPixels]
