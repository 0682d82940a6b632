"""The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`, with Triton's extensions): the schema
(inference.proto), its generated modules, the codec of tensors, the servicer and the server's start and stop."""
