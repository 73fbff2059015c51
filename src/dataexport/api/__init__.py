"""The HTTP API: FastAPI app factory, envelope, auth, one router per resource."""
