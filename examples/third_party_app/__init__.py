"""The guide's example third-party app, done the secure server-side way (see README.md).

Run it with ``python -m examples.third_party_app``; build it in-process with ``build_app(Config(...))``.
"""

from .app import Config, build_app

__all__ = ["Config", "build_app"]
