"""The companion CLIP trainer (VeCLIP's mixed AltText/VeC sampling) and zero-shot evaluation."""
