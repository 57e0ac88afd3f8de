"""Ways to start a TF-Serving-compatible model server for one validation attempt."""
