"""TLS (for REST and gRPC alike) and bearer-token authentication."""
