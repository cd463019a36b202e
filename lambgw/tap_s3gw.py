"""The ``s3gw`` twistd plugin's module: ordinary buckets inside one order."""

from lambgw.options import S3gwOptions as Options
from lambgw.tap import make_service as makeService

__all__ = ["Options", "makeService"]
