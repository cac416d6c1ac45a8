"""Training data: manifests in, deterministic batches of token ids, labels and visual patches out."""
