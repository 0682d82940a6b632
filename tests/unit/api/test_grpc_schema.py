"""morphserve's gRPC schema against the protocol's published one (tritonclient's compiled Triton descriptors): every
message, field and method it declares has the name, number, type and label the clients use, so that they interoperate
on the wire; and the committed generated modules are what scripts/gen_grpc.py makes of the .proto."""

from __future__ import annotations

import subprocess
import sys

import pytest
from google.protobuf import descriptor_pb2
from tritonclient.grpc import model_config_pb2, service_pb2

from morphserve.api.grpc import inference_pb2
from tests.conftest import ROOT


def _messages(module: object) -> dict[str, descriptor_pb2.DescriptorProto]:
    """Every message of a compiled module by full name (nested ones included)."""
    fd = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(fd)  # type: ignore[attr-defined]
    out: dict[str, descriptor_pb2.DescriptorProto] = {}

    def walk(prefix: str, msgs: object) -> None:
        for m in msgs:  # type: ignore[attr-defined]
            name = f"{prefix}.{m.name}"
            out[name] = m
            walk(name, m.nested_type)

    walk(fd.package, fd.message_type)
    return out


def _enums(module: object) -> dict[str, dict[str, int]]:
    fd = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(fd)  # type: ignore[attr-defined]
    out = {f"{fd.package}.{e.name}": {v.name: v.number for v in e.value} for e in fd.enum_type}
    for full, m in _messages(module).items():
        for e in m.enum_type:
            out[f"{full}.{e.name}"] = {v.name: v.number for v in e.value}
    return out


OURS = _messages(inference_pb2)
THEIRS = {**_messages(service_pb2), **_messages(model_config_pb2)}


@pytest.mark.parametrize("name", sorted(OURS))
def test_every_field_is_the_protocols(name: str) -> None:
    assert name in THEIRS, f"{name} is not a message of the protocol"
    theirs = {f.number: f for f in THEIRS[name].field}
    for f in OURS[name].field:
        t = theirs.get(f.number)
        assert t is not None, f"{name}.{f.name} = {f.number} is not a field of the protocol's {name}"
        assert (f.name, f.type, f.label, f.type_name) == (t.name, t.type, t.label, t.type_name), (name, f, t)
        assert f.HasField("oneof_index") == t.HasField("oneof_index"), (name, f.name)


def test_enums_have_the_protocols_values() -> None:
    theirs = {**_enums(service_pb2), **_enums(model_config_pb2)}
    for name, values in _enums(inference_pb2).items():
        assert name in theirs, name
        assert all(theirs[name].get(k) == v for k, v in values.items()), (name, values, theirs[name])


def test_methods_have_the_protocols_names_and_messages() -> None:
    theirs = {m.name: m for m in service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods}
    ours = inference_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert ours.full_name == "inference.GRPCInferenceService"
    core = {"ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer"}
    extensions = {"ModelConfig", "ModelStatistics", "RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"}
    assert core | extensions <= {m.name for m in ours.methods}
    for m in ours.methods:
        t = theirs[m.name]
        assert (m.input_type.full_name, m.output_type.full_name) == (t.input_type.full_name, t.output_type.full_name)
        assert not m.server_streaming and not t.server_streaming


def test_a_triton_request_parses_as_ours_and_back() -> None:
    """Bytes tritonclient would send decode into our message with every field, and ours back into theirs."""
    theirs = service_pb2.ModelInferRequest(model_name="m", model_version="3", id="r")
    t = theirs.inputs.add(name="input", datatype="FP32", shape=[2, 4])
    t.parameters["shared_memory_region"].string_param = "in0"
    theirs.parameters["min_version"].int64_param = 7
    theirs.raw_input_contents.append(b"\0" * 32)
    ours = inference_pb2.ModelInferRequest.FromString(theirs.SerializeToString())
    assert (ours.model_name, ours.model_version, ours.id) == ("m", "3", "r")
    assert ours.inputs[0].parameters["shared_memory_region"].string_param == "in0"
    assert ours.parameters["min_version"].int64_param == 7 and ours.raw_input_contents == [b"\0" * 32]
    assert service_pb2.ModelInferRequest.FromString(ours.SerializeToString()) == theirs


def test_the_committed_modules_are_generated_from_the_proto() -> None:
    r = subprocess.run([sys.executable, "scripts/gen_grpc.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
