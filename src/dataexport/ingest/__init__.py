"""Collection: hit validation (rules in hits_rules), the HTTP ingest path, bulk load."""
