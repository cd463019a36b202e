"""Watching the gateway: access log, Prometheus metrics, health checks and the status page."""
