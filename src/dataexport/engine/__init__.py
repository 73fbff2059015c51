"""Scheduler, workers and the job lifecycle."""
