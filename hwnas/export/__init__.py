"""A chosen subnet as deployable files (PyTorch, TorchScript, ONNX, int8) with a checked manifest."""
