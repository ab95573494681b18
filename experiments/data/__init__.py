"""Data layer: tokenizers, TFDS builders and grain input pipelines."""
