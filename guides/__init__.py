"""Guide families. Each is written once and works for every model whose latents it supports."""
from guides.amortized import Amortized
from guides.base import ZooGuide
from guides.exact import Exact
from guides.hamiltonian import Hamiltonian
from guides.iaf import IAF
from guides.ladder import Ladder
from guides.meanfield import MeanField
from guides.poe import ProductOfExperts
from guides.recurrent import Recurrent
from guides.relaxed import Relaxed
from guides.user import UserGuide, from_pyro_guide

__all__ = ["ZooGuide", "MeanField", "Amortized", "IAF", "Hamiltonian", "Ladder", "Recurrent", "Relaxed", "Exact", "ProductOfExperts", "UserGuide", "from_pyro_guide"]
