"""Training SeLaVi: the trainer, batches, the decode cache, refining, constraints and diagnostics."""
