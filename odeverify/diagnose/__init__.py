"""``odeverify diagnose``: the failure modes of a user's own Neural ODE, measured, each with a
verdict and what to do about it (docs/diagnose.md).

``diagnose(field, z0, t_span, ...) -> Diagnosis``; :class:`UserModel` is the validated model
every measurement takes.
"""
from __future__ import annotations

from .model import UserModel, load_field, parse_z0
from .run import DIAGNOSE_SCHEMA, Diagnosis, diagnose

__all__ = ["DIAGNOSE_SCHEMA", "Diagnosis", "UserModel", "diagnose", "load_field", "parse_z0"]
