"""The Envoy edge: configuration generated from the contracts and settings, and its process.

`config.build_config` turns the service catalog, the proto contracts and `Settings` into one
Envoy bootstrap; `process.EdgeProcess` runs Envoy as a child of `gatehouse up`;
`openapi.build_openapi` describes the REST surface that the transcoder exposes.
"""
