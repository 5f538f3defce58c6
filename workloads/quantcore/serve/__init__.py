"""Serving: the gRPC streaming API over Redis."""
