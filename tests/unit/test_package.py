import subprocess
import sys


def test_import_modeloptim_does_not_import_optional_integrations():
    code = (
        "import sys, modeloptim, modeloptim.torch, modeloptim.cli.main\n"
        "bad = [m for m in ('transformers', 'onnx', 'onnxruntime', 'triton') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_cli_help_lists_and_exits_zero():
    from modeloptim.cli.main import build_parser

    parser = build_parser()
    assert parser.prog == "modeloptim"
