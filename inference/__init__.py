"""Clients of inference servers (Ollama today). Imports no app: evaluations and the registry call it."""
