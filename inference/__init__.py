"""Inference backends (Ollama, OpenAI-compatible servers, the studio's own engine) and their endpoints.

Low in the layers: imports only the core (``finetune_studio``'s shared modules), never an app above it.
"""
