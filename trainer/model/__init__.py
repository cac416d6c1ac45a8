"""The OmniV-Med model: RoPE vision encoder (our layer loop over SigLIP's modules), projector, causal LM."""
