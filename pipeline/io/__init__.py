"""Inputs and outputs: input files and formats, the shard plan, readers, the shard writer, the release export."""
