"""The router's refusal: a push (or request) it will not, or cannot promise to, deliver."""

from __future__ import annotations


class Refused(Exception):
    """``code`` as in goim's answers: -503 refused (nothing done), -504 unknown (maybe done)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


__all__ = ["Refused"]
