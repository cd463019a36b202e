"""The lambgw test suite.

Property tests run without per-example deadlines or speed health checks: the suite shares
two cores with the gateways and clients it starts, and speed is the benchmark's business.
"""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "lambgw", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("lambgw")
