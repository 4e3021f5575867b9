"""xdsctl: the operator's view of the control plane (reads Redis; register/deregister append intents)."""
