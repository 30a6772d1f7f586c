"""Low-rank decomposition of PyTorch layers and whole models, and ONNX export."""
