"""The runtime every Gatehouse service shares: config, server bootstrap, errors, security,
persistence.
"""
