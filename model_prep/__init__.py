"""Turn a model checkpoint into browser artifacts: recipe → source → export → quantize → verify → layout."""
