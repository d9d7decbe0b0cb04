"""The bundled sample (``data/``) and the loopback server that hosts it for the demo and the tests."""
