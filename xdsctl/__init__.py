"""xdsctl: the operator's view of the control plane (reads Redis; writes nothing)."""
