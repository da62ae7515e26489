import os

# everything here runs offline: the tiny models are built from configs, MiniLM comes from an installed package
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def pytest_configure(config):
    config.addinivalue_line("markers", "hf: needs the optional Hugging Face extra (transformers, safetensors)")
