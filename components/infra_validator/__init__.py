"""InfraValidator: loads a model in a real model server and sends canary requests."""
