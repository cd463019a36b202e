"""lambgw: an S3-compatible gateway for the Lambda storage network."""

__version__ = "0.1.0"
