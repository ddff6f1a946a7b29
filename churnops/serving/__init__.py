"""Online serving: request validation from the contract, the champion in ONNX Runtime, the API.

Imports only the standard library, numpy, onnxruntime and boto3 (through the registry): the
serving container image carries no pandas, scipy or scikit-learn.
"""
