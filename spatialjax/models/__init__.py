"""One module per model. Import them explicitly, e.g. ``from spatialjax.models import jiao_tian as jt``."""
