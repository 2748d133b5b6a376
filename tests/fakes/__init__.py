"""Local stand-ins for external LLM APIs, speaking their public wire formats (no test reaches the internet)."""
