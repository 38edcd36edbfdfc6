"""Built-in metrics: gender privacy, identity verification, PIC and realism."""

from sbpet_bench import hookimpl


@hookimpl
def sbpet_register_metrics():
    from .gender import GenderMetric
    from .pic import PICMetric
    from .realism import RealismMetric
    from .verification import VerificationMetric

    return [GenderMetric, VerificationMetric, PICMetric, RealismMetric]
