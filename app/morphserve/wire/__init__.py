"""Wire formats shared by the server, the Python client and the CLI (numpy + orjson, never torch)."""
