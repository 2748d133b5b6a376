"""IIR operator (kopf): turns InferenceModel resources into vLLM Deployments and Services, and reports status."""
