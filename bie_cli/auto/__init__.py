"""``auto``: each tensor's strategy chosen for a budget by rate-distortion allocation.

``budget`` parses what the user asks for, ``candidates`` lists the
configurations measured, ``measure`` turns a configuration into real bytes
and relative MSE on a tensor, ``allocate`` spends a byte budget on convex
hulls, and ``planner`` ties them into a per-tensor plan that ``compress``
follows and ``bie plan`` prints or writes as a TOML policy.
"""
