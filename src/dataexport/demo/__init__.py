"""The demo: generated traffic of a small shop, and the seeded project `dataexport demo` serves."""
