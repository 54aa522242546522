"""The monitoring service: buildings, devices and their live sessions, alerts and the live event
feed.
"""
