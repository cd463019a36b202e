"""The lambgw test suite."""
