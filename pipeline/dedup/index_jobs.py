"""The dedup's index jobs: Beam pipelines that read a phase's rows (a few columns: uids, hashes,
AltText, captions; never image bytes), group them by what makes rows the same, and write row
patches (:mod:`pipeline.dedup.patches`) for the next phase. They run on the job's own runner,
so on Dataflow or Flink the grouping is the runner's shuffle of those small tuples.

* :class:`UrlIndex` (before the download): rows with the same normalised URL; all but the
  first valid row in input order get ``duplicate_of``/``duplicate_kind="url"`` and are not downloaded.
* :class:`CaptionPlan` (after it): URL duplicates take their canonical row's download outcome;
  rows with the same image (sha256) get ``duplicate_of`` the first row (input order) that downloaded it;
  canonical images found in the caption cache get their caption from it.
* :class:`FusionPlan` (after captioning): duplicates take their canonical's visual caption (or
  its ``caption_failed``); new captions go to the cache; rows with the same (image, AltText)
  get ``fusion_of``; canonical pairs found in the cache get their ethics verdict and fused
  caption from it.
* :class:`FusionFill` (after fusion): pair duplicates take their canonical's verdict and fused
  caption (or its failure); new fused captions go to the cache.

A canonical row is always one that succeeded at what the others take from it (a row that failed
validation or its own download is never a canonical), so a duplicate inherits a failure only
when doing the work again would fail the same way: the same URL already fetched with retries,
the same image bytes or the same caption and AltText through the same greedy model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam

from pipeline.dedup import cache as caption_cache
from pipeline.dedup.keys import caption_key, fusion_key, normalize_url
from pipeline.dedup.patches import write_shard_patches
from pipeline.io.writer import read_shard_records
from schemas.record import Record
from schemas.status import Status

METRICS_NAMESPACE = "vecap_dedup"
PATCH = "patch"

DOWNLOAD_FIELDS = (
    "status",
    "error",
    "sha256",
    "image_format",
    "width",
    "height",
    "original_width",
    "original_height",
    "http_status",
)
CAPTION_FIELDS = caption_cache.ENTRY_FIELDS[caption_cache.CAPTIONS]
FUSION_FIELDS = caption_cache.ENTRY_FIELDS[caption_cache.FUSIONS]


def _count(name: str, n: int = 1) -> None:
    beam.metrics.Metrics.counter(METRICS_NAMESPACE, name).inc(n)


def _inherited_failure(canonical: Record, what: str) -> dict[str, Any]:
    return {
        "status": canonical.status,
        "error": f"duplicate of {canonical.uid} ({what}): {canonical.error or canonical.status}",
    }


def _nothing_to_take(canonical_uid: str, what: str) -> dict[str, Any]:
    """A duplicate whose canonical row, or that row's result, is not in the phase's output (an
    inconsistent output, never a consistent one): a status, rather than a row that passes the
    model stage as another's duplicate and ends ok without the work."""
    _count("duplicates_without_a_result")
    return {
        "status": Status.INTERNAL_ERROR.value,
        "error": f"duplicate of {canonical_uid} ({what}), which holds no result to take",
    }


def _canonical_of(key: str, rows: list[Record]) -> Record | None:
    return next((r for r in rows if r.uid == key), None)


class ReadColumns(beam.PTransform):
    """Committed shards (shard id -> parquet URL) -> Records holding only ``columns``; from
    PLAN_FILE_MIN_SHARDS shards on the list goes through a file in ``list_dir``."""

    def __init__(self, parquets: Mapping[int, str], columns: Sequence[str], list_dir: str) -> None:
        super().__init__()
        self._parquets = dict(parquets)
        self._columns = tuple(dict.fromkeys(("uid", "shard_id", "row_index", *columns)))
        self._list_dir = list_dir

    def expand(self, pbegin):
        from pipeline.io.readers import PLAN_FILE_MIN_SHARDS, ShardParquets, write_parquet_list

        if len(self._parquets) >= PLAN_FILE_MIN_SHARDS:
            listing = write_parquet_list(self._parquets, f"{self._list_dir}/inputs.jsonl")
            shards = ShardParquets(plan_file=listing)
        else:
            shards = ShardParquets(sorted(self._parquets.items()))
        return (
            pbegin
            | "Shards" >> shards
            | "Read" >> beam.FlatMap(lambda s, cols: read_shard_records(s[1], cols), self._columns)
        )


class WritePatches(beam.PTransform):
    """(shard id, (uid, fields)) -> one patch file per shard in ``folder``."""

    def __init__(self, folder: str) -> None:
        super().__init__()
        self._folder = folder

    def expand(self, patches):
        return (
            patches
            | "ByShard" >> beam.GroupByKey()
            | "Write"
            >> beam.Map(lambda kv, folder: write_shard_patches(folder, kv[0], kv[1]), self._folder)
        )


def _patch(record: Record, fields: dict[str, Any]) -> beam.pvalue.TaggedOutput:
    return beam.pvalue.TaggedOutput(PATCH, (record.shard_id, (record.uid, fields)))


def input_order(record: Record) -> tuple[int, int]:
    """The canonical row of a group is its first in input order: (shard, row), not the uid
    string, which stops sorting in input order past shard 99,999 (uids grow a digit)."""
    return record.shard_id, record.row_index


# --------------------------------------------------------------------------- before the download


def _by_url(record: Record) -> Iterator[tuple[str, tuple[int, int, str]]]:
    if record.ok and record.url:
        yield normalize_url(record.url), (record.shard_id, record.row_index, record.uid)


def _url_duplicates(group) -> Iterator[tuple[int, tuple[str, dict]]]:
    rows = sorted(group[1])  # (shard, row, uid): input order
    canonical = rows[0][2]
    for shard_id, _row, uid in rows[1:]:
        _count("url_duplicates")
        yield shard_id, (uid, {"duplicate_of": canonical, "duplicate_kind": "url"})


class UrlIndex(beam.PTransform):
    """Input records -> patches naming each repeated URL's canonical row (the first valid one in input order)."""

    def __init__(self, folder: str) -> None:
        super().__init__()
        self._folder = folder

    def expand(self, records):
        return (
            records
            | "KeyByUrl" >> beam.FlatMap(_by_url)
            | "GroupUrls" >> beam.GroupByKey()
            | "Duplicates" >> beam.FlatMap(_url_duplicates)
            | "WritePatches" >> WritePatches(self._folder)
        )


# --------------------------------------------------------------------------- after the download

CAPTION_PLAN_COLUMNS = (*DOWNLOAD_FIELDS, "duplicate_of", "duplicate_kind")


def _key_by_url_canonical(record: Record) -> tuple[str, Record]:
    if record.duplicate_kind == "url" and record.duplicate_of:
        return record.duplicate_of, record
    return record.uid, record


class _InheritDownload(beam.DoFn):
    """A URL's rows: the duplicates take the canonical's download outcome (patch); every row
    goes on, as it now stands, to the image grouping."""

    def process(self, group: tuple[str, Iterable[Record]]):
        key, rows = group
        rows = list(rows)
        canonical = _canonical_of(key, rows)
        for row in rows:
            if row is canonical:
                yield row
                continue
            if canonical is None:
                fields = _nothing_to_take(key, "same URL")
                yield _patch(row, fields)
                yield row.replace(**fields)
                continue
            fields = {name: getattr(canonical, name) for name in DOWNLOAD_FIELDS}
            if not canonical.ok:
                fields.update(_inherited_failure(canonical, "same URL"))
                _count("url_duplicates_of_failed")
            yield _patch(row, fields)
            yield row.replace(**fields)


class _ImageGroups(beam.DoFn):
    """One image's ok rows: all but the first in input order become its duplicates; the canonical goes
    on, keyed by its caption key, to the cache lookup."""

    def __init__(self, settings: dict | None, generation: Any | None) -> None:
        self._settings = settings
        self._generation = generation

    def process(self, group: tuple[str, Iterable[Record]]):
        sha, rows = group
        rows = sorted(rows, key=input_order)
        canonical = rows[0]
        for row in rows[1:]:
            kind = "url" if row.duplicate_kind == "url" else "image"
            _count(f"{kind}_duplicates_captioned_once")
            yield _patch(row, {"duplicate_of": canonical.uid, "duplicate_kind": kind})
        if self._settings is not None:
            yield caption_key(sha, self._settings, self._generation), canonical


class _CacheEntries(beam.PTransform):
    """(key, (segment, fields)) of every segment of one kind, listed on a worker (a cache of
    many segments is not put into the job graph) through fsspec, like every vecap path."""

    def __init__(self, cache: str, kind: str) -> None:
        super().__init__()
        self._cache = cache
        self._kind = kind

    def expand(self, pbegin):
        return (
            pbegin
            | "Cache" >> beam.Create([self._cache])
            | "List" >> beam.FlatMap(caption_cache.list_segments, self._kind)
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.FlatMap(caption_cache.read_segment, self._kind)
        )


class _CacheLookup(beam.PTransform):
    """(key, canonical row) -> patches giving the rows found in the cache their entry."""

    def __init__(self, cache: str, kind: str, model: str | None, prompt_id: str | None) -> None:
        super().__init__()
        self._cache, self._kind, self._model, self._prompt_id = cache, kind, model, prompt_id

    def expand(self, keyed_rows):
        entries = keyed_rows.pipeline | "Entries" >> _CacheEntries(self._cache, self._kind)
        return (
            (keyed_rows, entries)
            | "Join" >> beam.CoGroupByKey()
            | "Hits" >> beam.ParDo(_CacheHits(self._kind, self._model, self._prompt_id))
        )


class _CacheHits(beam.DoFn):
    """A key's canonical rows and cache entries: an entry made by this model and prompt, if
    any, patches the rows (and marks them cached)."""

    def __init__(self, kind: str, model: str | None, prompt_id: str | None) -> None:
        self._kind = kind
        self._model = model
        self._prompt_id = prompt_id

    def process(self, joined):
        _key, (rows, entries) = joined
        if not rows:
            return
        entry = caption_cache.pick_entry(entries)
        if entry is None:
            return
        if not caption_cache.entry_matches(self._kind, entry, self._model, self._prompt_id):
            _count(f"{self._kind}_cache_refused")  # the key matched, the recorded model did not
            return
        flag = "caption_cached" if self._kind == caption_cache.CAPTIONS else "fusion_cached"
        for row in rows:
            _count(f"{self._kind}_cache_hits")
            yield row.shard_id, (row.uid, {**entry, flag: True})


class CaptionPlan(beam.PTransform):
    """Download output -> patches: URL duplicates' inherited downloads, image duplicates, cache
    hits. ``caption`` (CaptionConfig) with ``image_config`` enables the cache lookup."""

    def __init__(
        self,
        folder: str,
        *,
        caption: Any | None = None,
        image_config: Any | None = None,
        cache: str | None = None,
    ) -> None:
        super().__init__()
        self._folder = folder
        self._caption = caption
        self._image_config = image_config
        self._cache = cache

    def expand(self, rows):
        from pipeline.dedup.keys import caption_settings

        resolved = (
            rows
            | "KeyByUrlCanonical" >> beam.Map(_key_by_url_canonical)
            | "GroupUrl" >> beam.GroupByKey()
            | "InheritDownload" >> beam.ParDo(_InheritDownload()).with_outputs(PATCH, main="rows")
        )
        want_cache = self._caption is not None and self._cache is not None
        settings = caption_settings(self._caption, self._image_config) if want_cache else None
        generation = self._caption.generation if want_cache else None
        images = (
            resolved.rows
            | "OkImages" >> beam.FlatMap(lambda r: [(r.sha256, r)] if r.ok and r.sha256 else [])
            | "GroupImages" >> beam.GroupByKey()
            | "ImageGroups"
            >> beam.ParDo(_ImageGroups(settings, generation)).with_outputs(PATCH, main="keys")
        )
        patches = [resolved[PATCH], images[PATCH]]
        if want_cache:
            lookup = _CacheLookup(
                self._cache,
                caption_cache.CAPTIONS,
                self._caption.recorded_model,
                self._caption.prompt_id,
            )
            patches.append(images.keys | "CaptionCache" >> lookup)
        all_patches = patches | "AllPatches" >> beam.Flatten()
        return all_patches | "WritePatches" >> WritePatches(self._folder)


# --------------------------------------------------------------------------- after captioning

FUSION_PLAN_COLUMNS = (
    "status", "error", "alt_text", "sha256", "duplicate_of", "caption_cached", *CAPTION_FIELDS,
)  # fmt: skip


def _key_by_canonical(field: str):
    def key(record: Record) -> tuple[str, Record]:
        return getattr(record, field) or record.uid, record

    return key


class _FillCaptions(beam.DoFn):
    """One image's rows: duplicates take the canonical's visual caption (or its failure); a
    caption this job computed is added to the cache (output ``new``)."""

    def __init__(self, settings: dict | None, generation: Any | None) -> None:
        self._settings = settings
        self._generation = generation

    def process(self, group):
        key, rows = group
        rows = list(rows)
        canonical = _canonical_of(key, rows)
        for row in rows:
            if row is canonical or not row.ok or not row.duplicate_of:
                yield row
                continue
            if canonical is not None and canonical.status == Status.CAPTION_FAILED.value:
                fields = _inherited_failure(canonical, "same image")
            elif canonical is not None and canonical.ok and canonical.visual_caption:
                fields = {name: getattr(canonical, name) for name in CAPTION_FIELDS}
            else:
                fields = _nothing_to_take(key, "same image")
            yield _patch(row, fields)
            yield row.replace(**fields)
        if (
            canonical is not None
            and self._settings is not None
            and canonical.ok
            and canonical.visual_caption
            and not canonical.caption_cached
            and canonical.sha256
        ):
            entry = {name: getattr(canonical, name) for name in CAPTION_FIELDS}
            k = caption_key(
                canonical.sha256, self._settings, self._generation, canonical.caption_engine
            )
            yield beam.pvalue.TaggedOutput("new", (canonical.shard_id, (k, entry)))


class _PairGroups(beam.DoFn):
    """One (image, AltText) pair's ok rows: all but the first in input order get ``fusion_of``; the
    canonical goes on, keyed by its fusion key, to the cache lookup."""

    def __init__(self, settings: dict | None, generation: Any | None) -> None:
        self._settings = settings
        self._generation = generation

    def process(self, group):
        _pair, rows = group
        rows = sorted(rows, key=input_order)
        canonical = rows[0]
        for row in rows[1:]:
            _count("pair_duplicates_fused_once")
            yield _patch(row, {"fusion_of": canonical.uid})
        if self._settings is not None:
            yield (
                fusion_key(
                    canonical.visual_caption, canonical.alt_text, self._settings, self._generation
                ),
                canonical,
            )


def _pair_key(record: Record) -> list[tuple[str, Record]]:
    if not record.ok:
        return []
    ident = f"{record.duplicate_of or record.uid}\x00{record.alt_text or ''}"
    return [(hashlib.blake2b(ident.encode(), digest_size=16).hexdigest(), record)]


class WriteCacheSegments(beam.PTransform):
    """(shard id, (key, entry)) -> one cache segment per shard, named by job and shard."""

    def __init__(self, cache: str, kind: str, job: str) -> None:
        super().__init__()
        self._cache, self._kind, self._job = cache, kind, job

    def expand(self, entries):
        return (
            entries
            | "ByShard" >> beam.GroupByKey()
            | "Write" >> beam.Map(self._write, self._cache, self._kind, self._job)
        )

    @staticmethod
    def _write(kv, cache: str, kind: str, job: str) -> bool:
        shard, items = kv
        items = list(items)
        _count(f"{kind}_cache_added", len(items))
        return caption_cache.write_segment(
            cache, kind, caption_cache.segment_name(job, kind, shard), items
        )


class FusionPlan(beam.PTransform):
    """Caption output -> patches: duplicates' visual captions, pair duplicates, fusion cache
    hits; new captions added to the cache. ``pairs`` off: only the caption fill (no fusion)."""

    def __init__(
        self,
        folder: str,
        *,
        job: str,
        pairs: bool,
        caption: Any | None,
        image_config: Any | None,
        fusion: Any | None,
        ethics: Any | None,
        cache: str | None,
    ) -> None:
        super().__init__()
        self._folder, self._job, self._pairs = folder, job, pairs
        self._caption, self._image_config = caption, image_config
        self._fusion, self._ethics, self._cache = fusion, ethics, cache

    def expand(self, rows):
        from pipeline.dedup.keys import caption_settings, fusion_settings

        cache = self._cache
        c_settings = caption_settings(self._caption, self._image_config) if cache else None
        filled = (
            rows
            | "KeyByImage" >> beam.Map(_key_by_canonical("duplicate_of"))
            | "GroupImage" >> beam.GroupByKey()
            | "FillCaptions"
            >> beam.ParDo(
                _FillCaptions(c_settings, self._caption.generation if cache else None)
            ).with_outputs(PATCH, "new", main="rows")
        )
        patches = [filled[PATCH]]
        if cache:
            _ = filled.new | "AddCaptions" >> WriteCacheSegments(
                cache, caption_cache.CAPTIONS, self._job
            )
        if self._pairs:
            f_settings = fusion_settings(self._fusion, self._ethics) if cache else None
            f_generation = self._fusion.generation if (cache and self._fusion) else None
            pairs = (
                filled.rows
                | "KeyByPair" >> beam.FlatMap(_pair_key)
                | "GroupPairs" >> beam.GroupByKey()
                | "PairGroups"
                >> beam.ParDo(_PairGroups(f_settings, f_generation)).with_outputs(
                    PATCH, main="keys"
                )
            )
            patches.append(pairs[PATCH])
            if cache and self._fusion is not None:
                model = self._fusion.model_name or self._fusion.generation.model
                lookup = _CacheLookup(cache, caption_cache.FUSIONS, model, self._fusion.prompt_id)
                patches.append(pairs.keys | "FusionCache" >> lookup)
        all_patches = patches | "AllPatches" >> beam.Flatten()
        return all_patches | "WritePatches" >> WritePatches(self._folder)


# --------------------------------------------------------------------------- after fusion

FUSION_FILL_COLUMNS = (
    "status", "error", "alt_text", "visual_caption", "fusion_of", "fusion_cached", *FUSION_FIELDS,
)  # fmt: skip


class _FillFusions(beam.DoFn):
    """One pair's rows: duplicates take the canonical's ethics verdict and fused caption (or its
    failure); a fused caption this job computed is added to the cache (output ``new``)."""

    def __init__(self, settings: dict | None, generation: Any | None) -> None:
        self._settings = settings
        self._generation = generation

    def process(self, group):
        key, rows = group
        rows = list(rows)
        canonical = _canonical_of(key, rows)
        for row in rows:
            if row is canonical or not row.ok or not row.fusion_of:
                continue
            if canonical is None:
                fields = _nothing_to_take(key, "same image and AltText")
            else:
                fields = {name: getattr(canonical, name) for name in FUSION_FIELDS}
                if not canonical.ok:
                    fields.update(_inherited_failure(canonical, "same image and AltText"))
            yield _patch(row, fields)
        if (
            canonical is not None
            and self._settings is not None
            and canonical.ok
            and canonical.fusion_source
            and not canonical.fusion_cached
        ):
            entry = {name: getattr(canonical, name) for name in FUSION_FIELDS}
            k = fusion_key(
                canonical.visual_caption,
                canonical.alt_text,
                self._settings,
                self._generation,
                canonical.fusion_engine,
            )
            yield beam.pvalue.TaggedOutput("new", (canonical.shard_id, (k, entry)))


class FusionFill(beam.PTransform):
    def __init__(
        self, folder: str, *, job: str, fusion: Any | None, ethics: Any | None, cache: str | None
    ) -> None:
        super().__init__()
        self._folder, self._job = folder, job
        self._fusion, self._ethics, self._cache = fusion, ethics, cache

    def expand(self, rows):
        from pipeline.dedup.keys import fusion_settings

        cache = self._cache if self._fusion is not None else None
        settings = fusion_settings(self._fusion, self._ethics) if cache else None
        filled = (
            rows
            | "KeyByPair" >> beam.Map(_key_by_canonical("fusion_of"))
            | "GroupPair" >> beam.GroupByKey()
            | "FillFusions"
            >> beam.ParDo(
                _FillFusions(settings, self._fusion.generation if cache else None)
            ).with_outputs(PATCH, "new", main="none")
        )
        if cache:
            _ = filled.new | "AddFusions" >> WriteCacheSegments(
                cache, caption_cache.FUSIONS, self._job
            )
        return filled[PATCH] | "WritePatches" >> WritePatches(self._folder)


__all__ = [
    "CAPTION_PLAN_COLUMNS",
    "FUSION_FILL_COLUMNS",
    "FUSION_PLAN_COLUMNS",
    "CaptionPlan",
    "FusionFill",
    "FusionPlan",
    "ReadColumns",
    "UrlIndex",
]
