"""Collection from browsers: the tracking tag, its beacons, and what the server adds to them (device, place)."""
