"""A Flower app: federated DP-LoRA under secagg-dplora's secure aggregation (README.md)."""
