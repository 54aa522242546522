"""Use cases of the payments service: plain async functions over a unit of work.

They take commands (frozen dataclasses), the caller as a `Principal` and their dependencies
(`PaymentsDeps`), and raise domain errors from `gatehouse.runtime.errors`. No gRPC here: the
servicer maps requests to commands and results to responses.
"""
