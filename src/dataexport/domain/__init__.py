"""Pure domain code: no I/O, time passed in."""
