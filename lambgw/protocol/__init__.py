"""Pure S3 protocol code: signatures, aws-chunked bodies, checksums, XML, key rules."""
