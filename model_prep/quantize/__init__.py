"""Quantize: the variants of an fp32 graph, one weight at a time (q4, q4f16, q8)."""
