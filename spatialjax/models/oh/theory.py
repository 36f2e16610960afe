"""Oh (2025), theory model (Sections 2-3). Placeholder: being written."""

__all__: list[str] = []
