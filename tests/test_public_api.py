"""The names DESIGN.md fixes are importable from the top level and are the library's own objects."""
import importlib

import latentar as la


def test_every_export_resolves_to_its_module():
    for name, module in la._EXPORTS.items():
        assert getattr(la, name) is getattr(importlib.import_module(module), name), name
    assert set(la.__all__) == set(la._EXPORTS)


def test_design_contract_names():
    from latentar.exposure import BASH, RAC, ContextNoise, ScheduledSampling, TeacherForcing, exposure_curve  # noqa: F401
    from latentar.exposure.schedules import exponential, inverse_sigmoid, linear  # noqa: F401
    from latentar.metrics import frechet_distance  # noqa: F401
    tok = la.SigmaVAE(modality="image", in_channels=1, latent_dim=4, c_sigma=0.5)
    assert tok.encode is not None and la.GMMHead(dim=4, cond_dim=64, num_mixtures=16).loss is not None
    ar = la.LatentAR(latent_dim=4, head="gmm", d_model=32, depth=1, num_heads=4, max_len=16, num_classes=10)
    assert ar.generate(2, 3, labels=None).shape == (2, 3, 4)


def test_unknown_attribute_is_an_attribute_error():
    import pytest
    with pytest.raises(AttributeError, match="no_such"):
        la.no_such  # noqa: B018
