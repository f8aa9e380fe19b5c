import pytest
from pydantic import ValidationError

from modeloptim.torch.quantization.config import QuantizerAttributeConfig
from modeloptim.torch.quantization.formats import (
    FP8Format,
    IntegerFormat,
    MXFormat,
    NVFP4Format,
    resolve_format,
)


def test_defaults_follow_design():
    cfg = QuantizerAttributeConfig()
    assert cfg.num_bits == 8
    assert cfg.narrow_range is True
    assert cfg.enable
    assert cfg.fake_quant
    assert cfg.axis is None
    assert cfg.type == "static"
    assert cfg.calibrator == "max"


@pytest.mark.parametrize(
    ("attrs", "cls", "name"),
    [
        ({"num_bits": 8, "axis": 0}, IntegerFormat, "int8"),
        ({"num_bits": 4, "block_sizes": {-1: 128, "type": "static"}}, IntegerFormat, "int4"),
        ({"num_bits": (4, 3)}, FP8Format, "fp8_e4m3"),
        ({"num_bits": [5, 2]}, FP8Format, "fp8_e5m2"),
        (
            {"num_bits": (2, 1), "block_sizes": {-1: 16, "type": "dynamic", "scale_bits": (4, 3)}},
            NVFP4Format,
            "nvfp4",
        ),
        (
            {"num_bits": (4, 3), "block_sizes": {-1: 32, "type": "dynamic", "scale_bits": (8, 0)}},
            MXFormat,
            "mxfp8",
        ),
        (
            {"num_bits": (3, 2), "block_sizes": {-1: 32, "type": "dynamic", "scale_bits": (8, 0)}},
            MXFormat,
            "mxfp6",
        ),
        (
            {"num_bits": (2, 1), "block_sizes": {-1: 32, "type": "dynamic", "scale_bits": (8, 0)}},
            MXFormat,
            "mxfp4",
        ),
        (
            {"num_bits": 8, "block_sizes": {-1: 32, "type": "dynamic", "scale_bits": (8, 0)}},
            MXFormat,
            "mxint8",
        ),
        ({"num_bits": "nvfp4"}, NVFP4Format, "nvfp4"),
        ({"num_bits": "MXFP4"}, MXFormat, "mxfp4"),
        ({"num_bits": "fp8_e4m3", "axis": 0}, FP8Format, "fp8_e4m3"),
        ({"num_bits": 4, "block_sizes": {"-1": 64}}, IntegerFormat, "int4"),  # JSON string keys
    ],
)
def test_modelopt_attributes_resolve(attrs, cls, name):
    cfg = QuantizerAttributeConfig(**attrs)
    fmt = resolve_format(cfg)
    assert isinstance(fmt, cls)
    assert fmt.name == name


@pytest.mark.parametrize(
    ("attrs", "needle"),
    [
        ({"num_bitz": 8}, "num_bitz"),
        ({"num_bits": (3, 3)}, "num_bits"),
        ({"num_bits": 9}, "num_bits"),
        ({"num_bits": "int3x"}, "num_bits"),
        ({"num_bits": (2, 1)}, "num_bits"),  # FP4 needs block scales
        (
            {
                "num_bits": (2, 1),
                "type": "dynamic",
                "block_sizes": {-1: 16, "type": "static", "scale_bits": (4, 3)},
            },
            "type: dynamic nvfp4",
        ),
        ({"num_bits": (4, 3), "axis": 0, "block_sizes": {-1: 128}}, "axis and block_sizes"),
        ({"num_bits": 4, "block_sizes": {-1: 0}}, "block_sizes"),
        ({"num_bits": 4, "block_sizes": {-1: 128, "type": "sometimes"}}, "block_sizes"),
        ({"num_bits": 4, "block_sizes": {-1: 128, "bogus": 1}}, "block_sizes"),
        ({"num_bits": 4, "block_sizes": {-1: 128, "scale_bits": 8}}, "scale_bits"),
        ({"type": "sometimes"}, "type"),
        ({"calibrator": "minmax"}, "calibrator"),
        ({"calibrator": {"method": "histogram", "bins": 3}}, "calibrator"),
        ({"num_bits": (4, 3), "unsigned": True}, "unsigned"),
        ({"pre_quant_scale": 2.0}, "pre_quant_scale"),
        ({"rotate": True}, "rotate"),
        ({"bias": {"type": "static"}}, "bias"),
    ],
)
def test_bad_configs_name_the_field(attrs, needle):
    with pytest.raises(ValidationError, match=needle):
        QuantizerAttributeConfig(**attrs)


def test_calibrator_dict_and_informational_fields():
    cfg = QuantizerAttributeConfig(
        calibrator={"method": "histogram", "num_bins": 512},
        trt_high_precision_dtype="Half",
        pre_quant_scale=None,
        rotate=False,
        bias=None,
    )
    assert cfg.calibrator_method == "histogram"
    assert cfg.calibrator_options == {"num_bins": 512}
