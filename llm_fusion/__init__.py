"""AltText + visual caption fusion into the visual-enriched caption (VeC), and the ethics check.

Modules, one job each (import from them; this package stays light so ``vecap --help`` is fast):

- ``config``: ``FusionConfig`` and ``EthicsConfig`` (frozen, validated);
- ``prompts``: versioned fusion prompts (``veclip-fuse-v1``, ``capsfusion-v1``, user files with
  an id of name + content hash); the AltText and VC go in as escaped, delimited data blocks;
- ``alt_text_rules``: when an AltText carries no knowledge (empty, file name, URL, boilerplate)
  the LLM is skipped; long AltText is bounded;
- ``cleaning``: raw LLM output -> caption (preambles, quotes, markdown, one paragraph, unfinished
  sentence, CLIP-token bound) and the rejection rules (empty, prompt copy, refusal, non-words);
- ``clip_tokens``: CLIP token counting (calibrated estimate, or a real tokenizer);
- ``fusion_rules``: what happens to one record (skip, LLM, fallback, failure), as pure functions;
- ``handler``: a Beam ``ModelHandler`` asking a text LLM one question per record (both backends
  of ``pipeline.generation``), failed batches retried in halves;
- ``stage``: ``FusionStage``, the Beam PTransform Record -> Record;
- ``ethics_prompts`` / ``ethics``: ``EthicsCheckStage``, blocklist + LLM yes/no, policies.
"""
