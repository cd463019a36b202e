"""The S3 HTTP API: request spooling, authentication, routing, XML responses, errors."""
