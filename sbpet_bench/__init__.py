"""sbpet: a benchmark suite for soft-biometric privacy-enhancing techniques."""
__version__ = "0.1.0"
from .hookspecs import hookimpl  # noqa: F401  (plugins write: from sbpet_bench import hookimpl)
