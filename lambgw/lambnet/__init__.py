"""lambnet: a node of the Lambda network serving a store over the network protocol."""
