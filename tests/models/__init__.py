"""Our own small definitions of common model families, written for the import tests (not copied from
torchvision or timm). Each builder returns (module, inputs, facts): the --input specs and what the test checks
(a layer id the graph must show, the head to replace, a node to insert an identity after)."""
