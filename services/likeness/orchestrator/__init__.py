"""Orchestrator: durable jobs for the five workflows, dispatched to the model services over gRPC."""
