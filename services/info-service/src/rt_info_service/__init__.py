"""rt_info_service: enrolment of external publishers. Hands out load-balancer endpoints and
TLS material.
"""
