"""Verify: every variant against the torch model; Python onnxruntime replies the browser must reproduce."""
