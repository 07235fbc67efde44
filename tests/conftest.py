import jax
import pytest


jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "standard")


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory):
    """Converted SSP grids go to a per-session temporary cache, never the user's."""
    mp = pytest.MonkeyPatch()
    mp.setenv("RUBIX_EQX_CACHE", str(tmp_path_factory.mktemp("rubix_cache")))
    yield
    mp.undo()


@pytest.fixture
def key():
    return jax.random.key(0)
