"""The gateway core: buckets to orders and paths, the order cache, multipart uploads."""
