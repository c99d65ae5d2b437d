"""Audio: probe, validate, transcode to the distribution format, checksum."""
