"""The ADS replica: Redis -> versioned views -> gRPC streams.

Invariants: transports never call Redis; the cache never imports grpc; every
push is bytes that were serialized once per (view, type, version).
"""
