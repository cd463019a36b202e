"""The ``lambgw`` twistd plugin's module: every order of the account is a bucket."""

from lambgw.options import LambgwOptions as Options
from lambgw.tap import make_service as makeService

__all__ = ["Options", "makeService"]
