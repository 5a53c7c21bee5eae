"""LLM coding agents for every role of the inner loop and the Orchestrator, over any OpenAI-compatible endpoint."""
