"""The notifications service: email and webhook delivery, templates, preferences and delivery
tracking.
"""
