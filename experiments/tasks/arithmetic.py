"""Arithmetic in bases 2..10 (SequenceMatch's task); generated, no download.

Example text: "In base 7, what is -1403 + 265? -1105". The prompt is everything
up to and including ANSWER_DELIMITER ("? "): the trainer masks it out of the
loss, and generation starts right after it.

Config options: the DEFAULTS below, plus tokenizer ('byte', the default, or a
pretrained model's own, e.g. 'smollm2' with init_from='smollm2', or
'sentencepiece': see experiments.data.pip_sources.make_tokenizer), and data_dir
and sentencepiece_vocab_size for the latter.
"""
from __future__ import annotations

import re

import numpy as np

from experiments.data import pip_sources
from experiments.tasks import Task, in_memory_task

ANSWER_DELIMITER = '? '
_DIGITS = '0123456789'
_QUESTION_RE = re.compile(
    r'In base (\d+), what is (-?\d+) ([+-]) (-?\d+)' + re.escape(ANSWER_DELIMITER))

DEFAULTS = dict(min_base=2, max_base=10, max_digits=4, operations='+-',
                num_train=5000, num_test=200, seed=0)


def to_base(value: int, base: int) -> str:
  if value < 0:
    return '-' + to_base(-value, base)
  digits = []
  while True:
    value, digit = divmod(value, base)
    digits.append(_DIGITS[digit])
    if value == 0:
      return ''.join(reversed(digits))


def _compute(left: int, op: str, right: int) -> int:
  return left + right if op == '+' else left - right


def make_example(base: int, left: int, op: str, right: int) -> dict:
  prompt = (f'In base {base}, what is {to_base(left, base)} {op} '
            f'{to_base(right, base)}{ANSWER_DELIMITER}')
  answer = to_base(_compute(left, op, right), base)
  return {'text': prompt + answer, 'prompt': prompt, 'answer': answer}


def answer_for_prompt(prompt: str) -> str:
  """The correct answer to a prompt produced by `make_example`."""
  match = _QUESTION_RE.fullmatch(prompt)
  if match is None:
    raise ValueError(f'Not an arithmetic prompt: {prompt!r}')
  base = int(match.group(1))
  left, right = int(match.group(2), base), int(match.group(4), base)
  return to_base(_compute(left, match.group(3), right), base)


def _random_operand(rng: np.random.Generator, base: int, max_digits: int) -> int:
  num_digits = int(rng.integers(1, max_digits + 1))
  low = 0 if num_digits == 1 else base ** (num_digits - 1)
  value = int(rng.integers(low, base ** num_digits))
  return -value if rng.random() < 0.5 else value


def generate_questions(num: int, *, seed: int, min_base: int, max_base: int,
                       max_digits: int, operations: str) -> list[dict]:
  """`num` distinct examples, deterministic in all arguments."""
  if not 2 <= min_base <= max_base <= 10:
    raise ValueError(f'bases must satisfy 2 <= {min_base} <= {max_base} <= 10')
  rng = np.random.default_rng(seed)
  seen, examples = set(), []
  for _ in range(50 * num + 1000):  # Bounded: tiny question spaces can run dry.
    if len(examples) == num:
      return examples
    base = int(rng.integers(min_base, max_base + 1))
    left = _random_operand(rng, base, max_digits)
    op = operations[int(rng.integers(len(operations)))]
    right = _random_operand(rng, base, max_digits)
    example = make_example(base, left, op, right)
    if example['prompt'] not in seen:
      seen.add(example['prompt'])
      examples.append(example)
  raise ValueError(f'Could only generate {len(examples)} distinct questions of '
                   f'{num} requested; increase max_digits or the base range.')


def score(question_example: dict, generated_answer: str) -> bool:
  """Exact match, ignoring surrounding whitespace."""
  return generated_answer.strip() == question_example['answer']


def ground_truth_noise(prompt: str, answer_prefix: str,
                       rng: np.random.Generator) -> str:
  """A plausible wrong next character for SequenceMatch's `ground_truth` noise.

  Mistakes a learner makes: a digit off by one, a digit that does not exist in
  this base, a wrong sign, or stopping/continuing at the wrong place.
  """
  base = int(_QUESTION_RE.fullmatch(prompt).group(1))
  answer = answer_for_prompt(prompt)
  correct = answer[len(answer_prefix)] if (
      answer.startswith(answer_prefix) and len(answer_prefix) < len(answer)) else ''
  candidates = []
  if correct.isdigit():
    d = int(correct)
    candidates += [_DIGITS[(d + 1) % base], _DIGITS[(d - 1) % base]]
    candidates += list(_DIGITS[base:])  # Digits from a larger base.
  if not answer_prefix:
    candidates.append('-' if correct != '-' else _DIGITS[1])
  if not candidates or correct == '':
    candidates += list(_DIGITS[:base])  # Any digit: the answer should end here.
  candidates = [c for c in candidates if c != correct] or [_DIGITS[base - 1]]
  return candidates[int(rng.integers(len(candidates)))]


def make_task(config) -> Task:
  known = set(DEFAULTS) | {'name', 'tokenizer', 'data_dir', 'sentencepiece_vocab_size'}
  unknown = sorted(set(config) - known)
  if unknown:
    raise ValueError(f'unknown arithmetic task keys {unknown}; known: {sorted(known)}')
  options = {k: config.get(k, v) for k, v in DEFAULTS.items()}
  num_test, num_train = options.pop('num_test'), options.pop('num_train')
  # Test questions come first so they stay the same when num_train changes;
  # one pass of generation with a 'seen' set makes the splits disjoint.
  questions = generate_questions(num_test + num_train, **options)
  splits = {'train': questions[num_test:], 'test': questions[:num_test]}

  tokenizer = pip_sources.make_tokenizer(   # 'byte' unless config.tokenizer says otherwise
      config, splits['train'], config.get('data_dir', None) or pip_sources.default_data_dir(),
      'arithmetic')
  return in_memory_task('arithmetic', tokenizer, splits)
