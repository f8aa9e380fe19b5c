import pytest

from modeloptim.torch.utils.default_model import load_model


def test_load_model_rejects_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        load_model(str(tmp_path / "missing"))
