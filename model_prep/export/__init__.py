"""Export: fp32 ONNX graphs traced from the torch model (text decoders with KV cache, SmolVLM's three graphs)."""
