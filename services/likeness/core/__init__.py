"""What every service shares: settings, logging, server runtime, errors, store, images, models.

Free of torch and of any model library, so the orchestrator image stays small.
"""
