"""OpenAI-compatible HTTP server for the InternVL2 family on vLLM."""
