"""Oh (2025), quantitative model (Section 4, Appendix B). Placeholder: being written."""

__all__: list[str] = []
