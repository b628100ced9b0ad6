"""Clover's shared core: configuration, the Redis key contract, topics, schema, logging."""
