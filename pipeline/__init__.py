"""Reading inputs, downloading, writing shards and stats, composing the stages, the `vecap` CLI."""
