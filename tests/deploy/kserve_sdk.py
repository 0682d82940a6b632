"""A Kubernetes document checked strictly as the kserve SDK's model of its kind, in a process of its own
(tests/deploy/test_kubernetes.py runs it: the SDK cannot be imported beside tritonclient.grpc, see there).

`python -m tests.deploy.kserve_sdk V1beta1InferenceService < doc.json` prints `{"problem": null, "object": ...}`
(the SDK object's `to_dict()`, its own field names) or `{"problem": "<what is wrong>", "object": null}`.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def kserve_model(data: Any, type_name: str, where: str = "") -> Any:
    """`data` as the SDK's model `type_name`, strictly: a field the model does not have, or a value of the wrong
    type, fails (the SDK's own deserializer drops unknown fields silently); required fields are the models' own
    check (client-side validation raises ValueError)."""
    import kserve.models
    import kubernetes.client.models

    if data is None:
        return None
    if type_name.startswith(("list[", "List[")):
        assert isinstance(data, list), f"{where}: a list expected"
        return [kserve_model(x, type_name[5:-1], f"{where}[{i}]") for i, x in enumerate(data)]
    if type_name.startswith(("dict(", "Dict[")):
        assert isinstance(data, dict), f"{where}: a mapping expected"
        inner = type_name[type_name.index(",") + 1 : -1].strip()
        return {k: kserve_model(v, inner, f"{where}.{k}") for k, v in data.items()}
    primitive = {"str": str, "int": int, "bool": bool, "float": (int, float), "datetime": str, "date": str}
    if type_name in primitive:
        assert isinstance(data, primitive[type_name]), f"{where}: {type_name} expected, got {data!r}"
        return data
    if type_name == "object":
        return data
    cls = getattr(kserve.models, type_name, None) or getattr(kubernetes.client.models, type_name)
    assert isinstance(data, dict), f"{where}: an object ({type_name}) expected"
    fields = {json_name: attr for attr, json_name in cls.attribute_map.items()}
    unknown = set(data) - set(fields)
    assert not unknown, f"{where}: {type_name} has no field {sorted(unknown)}"
    return cls(**{fields[k]: kserve_model(v, cls.openapi_types[fields[k]], f"{where}.{k}") for k, v in data.items()})


def main() -> None:
    data = json.load(sys.stdin)
    try:
        obj = kserve_model(data, sys.argv[1])
    except (AssertionError, ValueError, TypeError) as e:
        print(json.dumps({"problem": str(e), "object": None}))
        return
    print(json.dumps({"problem": None, "object": obj.to_dict()}, default=str))


if __name__ == "__main__":
    main()
