"""What a fit reads, checked: one label per sequence (class ids, names or finite values),
token sequences that start with BOS and fit the vocabulary, and a deterministic split.
Every check names the first bad item (catrans.fit calls these before any compile)."""
import numpy as np

from catrans.attributes import AttributeSpec


def num_label_classes(spec: AttributeSpec) -> int:
  return 2 if spec.kind == "binary" else int(spec.num_classes)


def check_labels(spec: AttributeSpec, labels, num_examples: int, class_names=None) -> np.ndarray:
  """Labels as int32 class ids or float32 values; ValueError naming the first bad one."""
  if not isinstance(spec, AttributeSpec):
    raise ValueError(f"spec must be a catrans.attributes.AttributeSpec, got {type(spec).__name__}")
  labels = list(labels) if not isinstance(labels, np.ndarray) else labels
  if len(labels) != num_examples:
    raise ValueError(f"attribute {spec.name!r}: {len(labels)} labels for {num_examples} "
                     "sequences; give one label per sequence")
  if spec.kind == "numeric":
    try:
      arr = np.asarray(labels, np.float64)
    except (TypeError, ValueError) as e:
      raise ValueError(f"numeric attribute {spec.name!r} needs numbers as labels ({e})") from None
    bad = ~np.isfinite(arr)
    if bad.any():
      i = int(np.argmax(bad))
      raise ValueError(f"numeric attribute {spec.name!r}: label {i} is {arr[i]} (labels must be "
                       f"finite; drop unlabelled examples); {int(bad.sum())} bad in total")
    return arr.astype(np.float32)
  k = num_label_classes(spec)
  if class_names is not None:
    if len(class_names) != k:
      raise ValueError(f"attribute {spec.name!r} has {k} classes but {len(class_names)} "
                       f"class_names {list(class_names)}")
    index = {name: i for i, name in enumerate(class_names)}
    for i, y in enumerate(labels):
      if not isinstance(y, (int, np.integer)) and y not in index:
        raise ValueError(f"attribute {spec.name!r}: label {i} = {y!r} is not one of the "
                         f"class_names {list(class_names)}")
    labels = [index.get(y, y) if not isinstance(y, (int, np.integer)) else y for y in labels]
  arr = np.asarray(labels)
  if arr.dtype == bool:
    arr = arr.astype(np.int64)
  if arr.dtype.kind in ("U", "S", "O"):
    raise ValueError(f"attribute {spec.name!r} ({spec.kind}): labels are {arr.dtype} (e.g. "
                     f"{arr.flat[0]!r}); pass class ids in [0, {k}) or class_names")
  if arr.dtype.kind == "f":
    frac = ~np.isfinite(arr) | (arr != np.round(arr))
    if frac.any():
      i = int(np.argmax(frac))
      raise ValueError(f"attribute {spec.name!r} ({spec.kind}): label {i} = {arr[i]} is not a "
                       f"class id; {spec.kind} labels are integers in [0, {k})")
  arr = arr.astype(np.int64)
  bad = (arr < 0) | (arr >= k)
  if bad.any():
    i = int(np.argmax(bad))
    raise ValueError(f"attribute {spec.name!r} ({spec.kind}, {k} classes): label {i} = {arr[i]} "
                     f"is outside [0, {k}); drop unlabelled examples; {int(bad.sum())} bad in total")
  if len(np.unique(arr)) < 2:
    raise ValueError(f"attribute {spec.name!r}: every label is class {int(arr[0])}; nothing to "
                     "learn")
  return arr.astype(np.int32)


def prepare_sequences(vocab_size: int, *, tokens=None, texts=None, tokenizer=None,
                      max_len: int) -> tuple[list[np.ndarray], int]:
  """Token sequences (BOS first) cut to max_len + 1 tokens: (sequences, how many were cut)."""
  if (tokens is None) == (texts is None):
    raise ValueError("pass exactly one of tokens= (id sequences, BOS first) or texts= "
                     "(with tokenizer=)")
  if texts is not None:
    if tokenizer is None:
      raise ValueError("texts= needs tokenizer= (encode, bos_id, eos_id)")
    if isinstance(texts, str):
      raise ValueError("texts= must be a sequence of strings, got one string")
    seqs = []
    for i, t in enumerate(texts):
      if not isinstance(t, str):
        raise ValueError(f"texts[{i}] is {type(t).__name__}, not str")
      seqs.append([tokenizer.bos_id] + list(tokenizer.encode(t)) + [tokenizer.eos_id])
  else:
    seqs = list(tokens)
  out, cut = [], 0
  for i, s in enumerate(seqs):
    arr = np.asarray(s)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
      raise ValueError(f"sequence {i} must be a 1-D list of integer token ids, got shape "
                       f"{arr.shape} dtype {arr.dtype}")
    if arr.size < 2:
      raise ValueError(f"sequence {i} has {arr.size} token(s); it needs BOS and at least one "
                       "token after it")
    bad = (arr < 0) | (arr >= vocab_size)
    if bad.any():
      j = int(np.argmax(bad))
      raise ValueError(f"sequence {i}, position {j}: token id {int(arr[j])} is outside the "
                       f"model's vocabulary [0, {vocab_size}) (wrong tokenizer?)")
    if arr.size > max_len + 1:
      arr, cut = arr[:max_len + 1], cut + 1
    out.append(arr.astype(np.int32))
  if len(out) < 2:
    raise ValueError(f"need at least 2 sequences (a training and a held-out one), got {len(out)}")
  return out, cut


def to_batch(seqs: list[np.ndarray], pad_id: int = 0) -> dict:
  """inputs / targets [N, L] (L = longest - 1), weights 1 on real targets, lengths [N]."""
  width = max(len(s) for s in seqs) - 1
  n = len(seqs)
  inputs = np.full((n, width), pad_id, np.int32)
  targets = np.full((n, width), pad_id, np.int32)
  for i, s in enumerate(seqs):
    inputs[i, :len(s) - 1], targets[i, :len(s) - 1] = s[:-1], s[1:]
  lengths = np.array([len(s) - 1 for s in seqs], np.int32)
  weights = (np.arange(width)[None] < lengths[:, None]).astype(np.float32)
  return {"inputs": inputs, "targets": targets, "weights": weights, "lengths": lengths}


def split_indices(n: int, heldout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Deterministic (train, held-out) indices: a seeded permutation, the first share held out."""
  if not 0.0 < heldout < 1.0:
    raise ValueError(f"heldout must be a fraction in (0, 1), got {heldout}")
  order = np.random.default_rng(seed).permutation(n)
  k = min(max(1, int(round(heldout * n))), n - 1)
  return np.sort(order[k:]), np.sort(order[:k])
