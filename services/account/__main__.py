from libs.platform.web import run_service

from .app import build

run_service("account", build)
