"""Generated gRPC stubs of likeness.v1 (make protos)."""
