"""Serializers: values to bytes and back. JSON is the default; pickle only when named."""

from __future__ import annotations

from ._protocol import Serializer
from .json import JsonSerializer
from .pickle import PickleSerializer

__all__ = ("JsonSerializer", "PickleSerializer", "Serializer")
