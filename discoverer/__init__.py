"""The discoverer: sources, diffing and leader election.

Invariant: only the leader writes, and only through ``shared.store.Store.apply``.
"""
