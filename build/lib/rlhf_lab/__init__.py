"""rlhf_lab — the support package of the RLHF Lab workbook.

Data flows one way: world → policy → rollouts → algorithm → history → plots/widgets.
"""

from rlhf_lab.scale import Scale, get_scale

__version__ = "0.1.0"

__all__ = ["Scale", "get_scale", "__version__"]
