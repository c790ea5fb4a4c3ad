"""gRPC servicers: convserve.v1.Inference (task.py) and inference.GRPCInferenceService
(kserve.py), with the protobuf/numpy converters, postprocessing and the one RPC wrapper (rpc.py)
they share. Servicers convert and delegate; models are reached only through the repository."""
