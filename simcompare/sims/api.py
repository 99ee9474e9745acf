"""Old name of :mod:`simcompare.sims.tng_api` (the TNG web API), kept so existing imports work.

``import simcompare.sims.api`` gives the :mod:`~simcompare.sims.tng_api` module itself (so
patching an attribute through either name patches both) and a DeprecationWarning.
"""

import sys
import warnings

from . import tng_api

warnings.warn("simcompare.sims.api is now simcompare.sims.tng_api; import it by that name",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = tng_api
