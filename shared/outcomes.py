"""The statuses of an intent's outcome (``{xds}:outcome:<request>``), named once.

The leader writes them (``discoverer.outcomes``, the APPLY script in
``shared.scripts``); ``xdsctl register --wait`` and provisioners read them.
"""
APPLIED = "applied"  # the write that holds the intent is in Redis; the outcome has its version
REJECTED = "rejected"  # nothing changed; ``reason`` and ``detail`` say why
SUPERSEDED = "superseded"  # a later intent of the same batch undid it
STATUSES = (APPLIED, REJECTED, SUPERSEDED)
