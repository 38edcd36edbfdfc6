"""Built-in metrics: gender privacy, worst-case privacy over attacker tiers, identity verification, PIC and realism."""

from sbpet_bench import hookimpl


@hookimpl
def sbpet_register_metrics():
    from .gender import GenderMetric
    from .pic import PICMetric
    from .realism import RealismMetric
    from .verification import VerificationMetric
    from .worst_case import WorstCaseMetric

    return [GenderMetric, WorstCaseMetric, VerificationMetric, PICMetric, RealismMetric]
