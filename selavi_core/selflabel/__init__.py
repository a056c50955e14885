"""Self-labelling: Sinkhorn-Knopp optimal transport, cluster-size priors and modality alignment."""
