"""Helpers for tests, the demo and benchmarks: a Fly-like DNS server, zone files, TLS stand-in builders."""
