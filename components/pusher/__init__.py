"""Pusher: publishes a blessed model atomically into a TF-Serving model store."""
