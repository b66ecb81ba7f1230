"""ONNX files in and out without holding every weight at once: one reader, one streaming writer."""
