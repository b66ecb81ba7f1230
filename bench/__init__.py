"""On-device throughput: the app in Chromium, native onnxruntime on the same artifact, and wllama as a peer."""
