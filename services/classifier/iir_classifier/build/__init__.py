"""Build-time steps (`make classifier-model`): export the encoder to ONNX, train the heads. Needs torch."""
