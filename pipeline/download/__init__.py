"""The download stage: fetch (address guard, HTTP client), image processing, the Beam stage."""
