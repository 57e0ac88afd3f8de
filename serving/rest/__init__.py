"""REST front end: URL routing, the ASGI app and TF Serving's JSON codec."""
