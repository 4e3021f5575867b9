"""Code shared by the discoverer, the ADS replicas and xdsctl.

Invariant: only the discoverer leader writes the builder set, and only through
``shared.store`` (the one module that speaks Lua).
"""
