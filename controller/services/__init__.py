"""Controller services: catalogue, programme, dispatch, telemetry."""
