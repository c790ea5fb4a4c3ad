"""convserve's PyTorch half: model zoo, datasets, training, ONNX export and parity checks.

Imports torch; never imports ``service/`` (the two halves meet in the model repository).
"""
