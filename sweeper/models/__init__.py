"""Models: offline tiny twins and real checkpoints (language), small image classifiers (vision), log-probs."""
