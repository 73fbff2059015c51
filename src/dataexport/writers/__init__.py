"""CSV/JSONL gzip part writers over Arrow record batches."""

from dataexport.writers.parts import PartInfo, part_file_name, write_parts

__all__ = ["PartInfo", "part_file_name", "write_parts"]
