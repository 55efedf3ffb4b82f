from kneuron.models.load import DEFAULT_MODEL, ModelHandle, ModelLoadError, from_model, load_model
from kneuron.models.sites import ARCHITECTURES, SiteError, find_site, value_vectors

__all__ = ["DEFAULT_MODEL", "ModelHandle", "ModelLoadError", "from_model", "load_model",
           "ARCHITECTURES", "SiteError", "find_site", "value_vectors"]
