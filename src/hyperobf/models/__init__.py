"""Torch models: the MaskNet (built from a spec) and the HyperNet that generates its weights."""
