"""Where model versions live and how they are discovered."""
