"""PSP-side export: per-user MaskNets to ONNX (and, via the format table, other formats)."""
