"""The programme model and the wire format shared by controller and receiver."""
