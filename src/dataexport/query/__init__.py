"""The read side: export SQL over a warehouse's pageviews, slicing, segments, variables."""
