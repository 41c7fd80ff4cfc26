"""Model families.  Importing this package registers every variant."""

from . import mobilenet_v1, mobilenet_v2, mobilenet_v3, shufflenet_v1, shufflenet_v2  # noqa: F401
