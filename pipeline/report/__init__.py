"""`vecap report`: one self-contained HTML page to look at a vecap output before trusting it.

A seeded random sample of rows (thumbnail beside AltText, visual caption and fused caption),
failures grouped by status, figures (rows per status, caption lengths, fusion sources, rows/s
per shard over time) and the run's manifest. Reads only finished shards (those with a stats
file), in memory that does not grow with the number of rows.
"""

from pipeline.report.build import ReportConfig, ReportResult, build_report, collect_content

__all__ = ["ReportConfig", "ReportResult", "build_report", "collect_content"]
