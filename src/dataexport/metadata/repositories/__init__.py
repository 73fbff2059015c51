"""Every query of the metadata DB lives in these modules. Services pass a session and plain values."""
