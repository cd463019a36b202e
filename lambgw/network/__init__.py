"""The Lambda storage network: the interface the gateway uses and its implementations."""
