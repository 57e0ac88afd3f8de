"""The inference core shared by the REST and gRPC front ends (no wire formats in here)."""
