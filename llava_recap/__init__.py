"""The visual captioner: prompts per model family, the Beam ModelHandler, tiny offline test models."""
