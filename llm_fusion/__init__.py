"""AltText + visual caption fusion into the visual-enriched caption (VeC), and the ethics check."""
