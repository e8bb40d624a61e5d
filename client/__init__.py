"""What an edge device runs: the client agent (and, later, DP-LoRA training)."""

__all__: list[str] = []
