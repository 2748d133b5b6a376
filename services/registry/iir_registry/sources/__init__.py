"""Where the registry learns of models: a file (no cluster) or Kubernetes."""
