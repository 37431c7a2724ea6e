"""Zoo models. Each file is one generative story; see :mod:`zoo.core.contract` for the contract."""
from zoo.core.contract import LatentSite, ZooModel
from zoo.core.plates import data_plate, MAX_PLATE_NESTING
from zoo.models.ppca import PPCA, ppca_ml_solution
from zoo.models.vae import VAE
from zoo.models.sbn import SBN
from zoo.models.hvae import HVAE
from zoo.models.categorical_vae import CategoricalVAE
from zoo.models.mvae import MVAE
from zoo.models.draw import DRAW
from zoo.models.pyro_model import PyroModel, from_pyro
from zoo.models.model_files import resolve_model_file

__all__ = ["LatentSite", "ZooModel", "data_plate", "MAX_PLATE_NESTING", "PPCA", "ppca_ml_solution", "VAE", "HVAE",
           "SBN", "CategoricalVAE", "MVAE", "DRAW",
           "PyroModel", "from_pyro", "resolve_model_file"]
