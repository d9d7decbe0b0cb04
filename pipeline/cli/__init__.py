"""The `vecap` command line: ``main`` registers one module per group of subcommands."""

from pipeline.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
