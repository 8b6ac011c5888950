"""Example apps that integrate with the platform the way the public integration guide describes."""
