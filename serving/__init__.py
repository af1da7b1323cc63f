"""Serving: export bundles to ONNX, generate the Triton model repository, run Triton, deploy, and the client.

Modules: ``export`` (ONNX + parity), ``repository`` (version folders, config.pbtxt), ``triton_model/model.py``
(the Python-backend model copied into each version), ``server`` (local tritonserver process), ``smoke``
(golden examples), ``deploy`` (deploy/rollback), ``client`` (TaggerClient; the gRPC contract is in its docstring).
"""
