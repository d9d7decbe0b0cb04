"""The bundled demo sample: photo-like JPEGs and sample.csv (rebuild with make_sample.py)."""
