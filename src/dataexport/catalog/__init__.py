"""The exportable-field catalog: ONE definition per field drives both the API listing and the export SQL."""

from dataexport.catalog.fields import CATALOG, CatalogField, fields_for, lookup

__all__ = ["CATALOG", "CatalogField", "fields_for", "lookup"]
