"""Benchmarks of the gateway against a baseline S3 server."""
