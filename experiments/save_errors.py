"""A save that fails (full disk, permissions, a vanished mount) becomes one clear error that
names the path and the free space there, instead of a cascade of tracebacks."""
import os
import re
import shutil


class SaveError(RuntimeError):
  """Writing a checkpoint or the metrics failed; earlier checkpoints are untouched."""


def _root_cause(exc: BaseException) -> BaseException:
  """The OSError behind a wrapped exception (orbax and tensorstore re-raise their own)."""
  seen, e = set(), exc
  while e is not None and id(e) not in seen:
    if isinstance(e, OSError):
      return e
    seen.add(id(e))
    e = e.__cause__ or e.__context__
  return exc


def free_bytes(path: str) -> int | None:
  while path and not os.path.exists(path):
    path = os.path.dirname(path)
  try:
    return shutil.disk_usage(path or ".").free
  except OSError:
    return None


def write_failure(path: str, exc: BaseException, what: str = "checkpoint") -> SaveError:
  cause = _root_cause(exc)
  # tensorstore (under orbax) raises ValueError('RESOURCE_EXHAUSTED: ... [os_error_code=28]')
  code = re.search(r"os_error_code='?(\d+)", str(cause))
  if isinstance(cause, OSError) and cause.strerror:
    reason = cause.strerror
  elif code:
    reason = os.strerror(int(code.group(1)))
  else:
    text = str(cause).strip().splitlines()
    reason = f"{type(cause).__name__}: {text[0][:300] if text else ''}"
  free = free_bytes(path)
  space = "unknown free space" if free is None else f"{free / 2**20:.1f} MiB free there"
  return SaveError(f"could not write the {what} at {path}: {reason} ({space}). Earlier "
                   f"checkpoints are intact; free space or fix the permissions and rerun the "
                   f"same command to resume from the newest one.")
