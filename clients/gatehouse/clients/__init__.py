"""Typed async clients for Gatehouse services: what internal callers import.

from gatehouse.clients import ChannelFactory, ClientCredentials
"""

from gatehouse.clients.channel import (
    ChannelFactory,
    ClientCredentials,
    RetryPolicy,
    bearer_token,
)

__all__ = ["ChannelFactory", "ClientCredentials", "RetryPolicy", "bearer_token"]
