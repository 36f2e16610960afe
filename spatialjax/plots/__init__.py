"""Matplotlib figures (written to files, Agg backend), one module per model."""

import matplotlib

matplotlib.use("Agg")
