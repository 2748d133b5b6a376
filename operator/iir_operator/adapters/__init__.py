"""LoRA adapters (InferenceAdapter resources) loaded into a model's vLLM replicas at run time."""
