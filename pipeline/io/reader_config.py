"""The reader's configuration and its command-line flags (no Beam import: `vecap --help` stays fast)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from pipeline.io.input_files import INPUT_FORMATS

# make_uid gives the row index 7 digits
MAX_SHARD_SIZE = 9_999_999
# A shard is the unit of work, commit and resume; its rows (with ~30 KB images each) sit in one
# worker's memory until it is written, so keep it modest: 1,000 rows is ~30 MB of images.
DEFAULT_SHARD_SIZE = 1_000


@dataclass(frozen=True)
class ReaderConfig:
    """Where the input rows are and which columns to take from them."""

    input: str | tuple[str, ...]  # fsspec URL, path, glob or directory; several allowed
    # parquet | jsonl | json | csv | tsv | img2dataset | webdataset; None: from each file's
    # extension (a parquet file with a binary jpg/png/webp column is read as img2dataset output)
    input_format: str | None = None
    url_column: str = "url"
    caption_column: str | None = "caption"  # None: the input has no alt-text
    extra_columns: tuple[str, ...] = ()  # kept in Record.extra as a JSON object
    # csv/tsv without a header line: the names of its columns in order (CC3M's TSV: caption,url)
    column_names: tuple[str, ...] = ()
    shard_size: int = 10_000
    # img2dataset inputs: decode every image fully (catches truncated bytes) instead of the header
    verify_images: bool = False

    def __post_init__(self) -> None:
        inputs = (self.input,) if isinstance(self.input, str) else tuple(self.input)
        if not inputs or not all(isinstance(i, str) and i.strip() for i in inputs):
            raise ValueError(
                f"input must be one or more non-empty paths or URLs, got {self.input!r}"
            )
        object.__setattr__(self, "input", inputs if len(inputs) > 1 else inputs[0])
        if self.input_format is not None and self.input_format not in INPUT_FORMATS:
            raise ValueError(
                f"input_format must be one of {', '.join(INPUT_FORMATS)} (or None for automatic), "
                f"got {self.input_format!r}"
            )
        if not self.url_column:
            raise ValueError("url_column must be a column name")
        if self.caption_column == "":
            raise ValueError("caption_column must be a column name or None")
        extras = tuple(self.extra_columns)
        if not all(isinstance(c, str) and c for c in extras) or len(set(extras)) != len(extras):
            raise ValueError(f"extra_columns must be distinct column names, got {extras!r}")
        object.__setattr__(self, "extra_columns", extras)
        names = tuple(self.column_names)
        if not all(isinstance(c, str) and c for c in names) or len(set(names)) != len(names):
            raise ValueError(f"column_names must be distinct column names, got {names!r}")
        if names and self.input_format not in (None, "csv", "tsv"):
            raise ValueError("column_names (a headerless table) applies to csv and tsv inputs only")
        object.__setattr__(self, "column_names", names)
        if isinstance(self.shard_size, bool) or not isinstance(self.shard_size, int):
            raise ValueError(f"shard_size must be an integer, got {self.shard_size!r}")
        if not isinstance(self.verify_images, bool):
            raise ValueError(f"verify_images must be true or false, got {self.verify_images!r}")
        if not 1 <= self.shard_size <= MAX_SHARD_SIZE:
            raise ValueError(
                f"shard_size must be between 1 and {MAX_SHARD_SIZE}, got {self.shard_size}"
            )

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.input,) if isinstance(self.input, str) else self.input  # type: ignore[return-value]

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns read from each row, without duplicates: url, caption, extras."""
        named = [self.url_column, self.caption_column, *self.extra_columns]
        return tuple(dict.fromkeys(c for c in named if c is not None))


# --------------------------------------------------------------------------- CLI helpers


def add_reader_arguments(parser: argparse.ArgumentParser) -> None:
    """The reader's flags, for any command that reads inputs (``vecap run`` and friends)."""
    group = parser.add_argument_group("input")
    group.add_argument(
        "--input", action="append", metavar="URL",
        help="input file, glob or directory (fsspec URL); repeat for several",
    )  # fmt: skip
    group.add_argument(
        "--input-format", choices=INPUT_FORMATS, default=None,
        help="input format (default: from each file's extension; .gz etc. are decompressed)",
    )  # fmt: skip
    group.add_argument("--url-column", default="url", help="column holding image URLs")
    group.add_argument(
        "--caption-column", default="caption",
        help="column holding the alt-text; pass an empty string for inputs without one",
    )  # fmt: skip
    group.add_argument(
        "--extra-columns", default="", metavar="COL,COL",
        help="comma-separated input columns to keep (stored in the 'extra' JSON column)",
    )  # fmt: skip
    group.add_argument(
        "--column-names", default="", metavar="COL,COL",
        help="csv/tsv without a header line: its column names in order (e.g. caption,url)",
    )  # fmt: skip
    group.add_argument(
        "--shard-size", type=int, default=DEFAULT_SHARD_SIZE,
        help=f"rows per input shard (default {DEFAULT_SHARD_SIZE}, as vecap run)",
    )  # fmt: skip
    group.add_argument(
        "--verify-images", action=argparse.BooleanOptionalAction, default=False,
        help="img2dataset inputs: fully decode every image while reading",
    )  # fmt: skip


def reader_config_from_args(args: argparse.Namespace) -> ReaderConfig:
    return ReaderConfig(
        input=tuple(args.input or ()),
        input_format=args.input_format,
        url_column=args.url_column,
        caption_column=args.caption_column or None,
        extra_columns=tuple(c.strip() for c in args.extra_columns.split(",") if c.strip()),
        column_names=tuple(c.strip() for c in args.column_names.split(",") if c.strip()),
        shard_size=args.shard_size,
        verify_images=args.verify_images,
    )


__all__ = ["MAX_SHARD_SIZE", "ReaderConfig", "add_reader_arguments", "reader_config_from_args"]
