"""Exact dedup before the GPU (``vecap run --dedup``) and the caption cache across jobs.

``keys`` (what makes rows the same), ``patches`` (per-shard row patches an index job commits),
``cache`` (the caption cache's segments), ``index_jobs`` (the Beam jobs that group rows and
write patches), ``phases`` (the chain of resumable runs).
"""
