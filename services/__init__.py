"""Shared contracts of Tandem: config tree, wire records, buffer, weight transport, CLI and the driver.

The roles (learner, actors, reward_server) import from here and never from each other.
"""
