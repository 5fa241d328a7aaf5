"""Training: data preparation, Selective Information Sampling, losses, and the two-stage Accelerate loop."""
