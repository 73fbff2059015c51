"""Secrets and tokens."""
