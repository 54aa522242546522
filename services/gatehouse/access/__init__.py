"""The access service: PINs, visitors, door schedules, remote opening, emergencies and the tamper-
evident access log.
"""
