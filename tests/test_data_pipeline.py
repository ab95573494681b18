"""grain pipelines: batch contract, masks, packing, multi-host rows, resume."""
import json
import math

import numpy as np
import pytest

from experiments.data import pipeline
from experiments.data.tokenizers import ByteTokenizer
from experiments.tasks import Task

SEQ_LEN = 24
KEYS = {'inputs': np.int32, 'targets': np.int32, 'weights': np.float32,
        'positions': np.int32, 'segment_ids': np.int32}


def _examples(n, seed=0):
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    prompt = f'q{i}:'
    answer = 'x' * int(rng.integers(1, 30))  # Some are longer than SEQ_LEN.
    out.append({'text': prompt + answer, 'prompt': prompt, 'answer': answer,
                'label': i % 3})
  return out


def _task(examples):
  return Task(name='fake', tokenizer=ByteTokenizer(),
              source=lambda split: examples, splits=('train',),
              label_names={'label': ('a', 'b', 'c')})


TASK = _task(_examples(37))


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_same(batches_a, batches_b):
  assert len(batches_a) == len(batches_b)
  for a, b in zip(batches_a, batches_b):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize('mode', pipeline.MODES)
def test_batch_contract(mode):
  it = pipeline.make_train_iterator(TASK, 'train', global_batch_size=8,
                                    seq_len=SEQ_LEN, seed=0, mode=mode)
  for batch in _take(it, 6):
    expected = dict(KEYS, **({'label': np.int32} if mode == 'padding' else {}))
    assert set(batch) == set(expected)
    for key, dtype in expected.items():
      assert batch[key].dtype == dtype, key
      assert batch[key].shape == ((8, SEQ_LEN) if key in KEYS else (8,))
    segments = batch['segment_ids']
    assert np.all(batch['weights'][segments == 0] == 0)
    assert np.all(batch['inputs'][segments == 0] == 0)
    # Targets are the next input inside a segment.
    same = (segments[:, 1:] == segments[:, :-1]) & (segments[:, 1:] > 0)
    np.testing.assert_array_equal(batch['targets'][:, :-1][same],
                                  batch['inputs'][:, 1:][same])
    # Positions restart at every segment, and every segment starts at bos.
    for row in range(8):
      for seg in set(segments[row].tolist()) - {0}:
        where = np.flatnonzero(segments[row] == seg)
        np.testing.assert_array_equal(batch['positions'][row, where],
                                      np.arange(len(where)))
        assert batch['inputs'][row, where[0]] == 1


def test_padding_weights_skip_prompt_and_padding():
  examples = _examples(8)
  it = pipeline.make_eval_iterator(_task(examples), 'train',
                                   global_batch_size=8, seq_len=SEQ_LEN)
  batch = next(it)
  tok = ByteTokenizer()
  for row, example in enumerate(examples):
    doc = [1] + tok.encode(example['prompt']) + tok.encode(example['answer']) + [2]
    doc = doc[:SEQ_LEN + 1]
    n_prompt = len(tok.encode(example['prompt']))
    expected_weights = np.zeros(SEQ_LEN, np.float32)
    expected_weights[n_prompt:len(doc) - 1] = 1  # Target index i = doc[i + 1].
    np.testing.assert_array_equal(batch['weights'][row], expected_weights)
    np.testing.assert_array_equal(batch['inputs'][row, :len(doc) - 1], doc[:-1])
    np.testing.assert_array_equal(batch['targets'][row, :len(doc) - 1], doc[1:])
    assert batch['label'][row] == example['label']
    assert batch['segment_ids'][row].sum() == len(doc) - 1


def test_packing_puts_several_documents_in_a_row():
  short = [{'text': 'ab'} for _ in range(40)]
  it = pipeline.make_train_iterator(_task(short), 'train', global_batch_size=2,
                                    seq_len=SEQ_LEN, seed=0, mode='packing')
  batch = next(it)
  # Each document is 3 rows (bos a b -> a b eos): 8 fit in 24.
  assert batch['segment_ids'].max() == 8
  np.testing.assert_array_equal(batch['positions'][0, :6], [0, 1, 2, 0, 1, 2])


def test_missing_label_is_minus_one():
  examples = [{'text': 'a', 'label': 2}, {'text': 'b'}]
  batch = next(pipeline.make_eval_iterator(_task(examples), 'train',
                                           global_batch_size=4, seq_len=8))
  np.testing.assert_array_equal(batch['label'], [2, -1, -1, -1])
  np.testing.assert_array_equal(batch['weights'].sum(1), [2, 2, 0, 0])


@pytest.mark.parametrize('mode', pipeline.MODES)
@pytest.mark.parametrize('process_count', [2, 4])
def test_process_rows_union_is_single_process_batch(mode, process_count):
  kwargs = dict(global_batch_size=8, seq_len=SEQ_LEN, seed=3, mode=mode)
  steps = 12  # > 2 epochs of 37 examples: covers the reshuffle boundary.
  single = _take(pipeline.make_train_iterator(TASK, 'train', **kwargs), steps)
  per_process = [
      _take(pipeline.make_train_iterator(TASK, 'train', process_index=p,
                                         process_count=process_count, **kwargs),
            steps) for p in range(process_count)]
  for step in range(steps):
    union = {k: np.concatenate([rows[step][k] for rows in per_process])
             for k in single[step]}
    _assert_same([union], [single[step]])


@pytest.mark.parametrize('mode', pipeline.MODES)
def test_eval_pass_is_finite_and_complete(mode):
  kwargs = dict(global_batch_size=8, seq_len=SEQ_LEN, mode=mode)
  single = list(pipeline.make_eval_iterator(TASK, 'train', **kwargs))
  per_process = [list(pipeline.make_eval_iterator(
      TASK, 'train', process_index=p, process_count=2, **kwargs)) for p in (0, 1)]
  assert len(per_process[0]) == len(per_process[1]) == len(single)
  documents = sum(int(b['segment_ids'].max(1).sum()) for b in single)
  if mode == 'padding':
    assert len(single) == math.ceil(37 / 8)
    assert documents == 37
    labels = np.concatenate([b['label'] for b in single]).tolist()
    assert labels == [i % 3 for i in range(37)] + [-1] * (len(single) * 8 - 37)
  else:
    assert sum(int(len(set(r.tolist()) - {0})) for b in single
               for r in b['segment_ids']) == 37


def test_each_epoch_is_reshuffled():
  task = _task(_examples(8))
  it = pipeline.make_train_iterator(task, 'train', global_batch_size=8,
                                    seq_len=SEQ_LEN, seed=0)
  first, second = _take(it, 2)
  assert sorted(first['label'].tolist()) == sorted(second['label'].tolist())
  assert not np.array_equal(first['inputs'], second['inputs'])


@pytest.mark.parametrize('mode', pipeline.MODES)
def test_restored_iterator_continues_identically(mode):
  kwargs = dict(global_batch_size=4, seq_len=SEQ_LEN, seed=1, mode=mode,
                process_index=1, process_count=2)
  original = pipeline.make_train_iterator(TASK, 'train', **kwargs)
  _take(original, 5)
  state = json.loads(json.dumps(original.get_state()))  # As a checkpoint would.
  expected = _take(original, 8)
  restored = pipeline.make_train_iterator(TASK, 'train', **kwargs)
  restored.set_state(state)
  _assert_same(_take(restored, 8), expected)


def test_deterministic_given_seed():
  make = lambda seed: _take(pipeline.make_train_iterator(
      TASK, 'train', global_batch_size=4, seq_len=SEQ_LEN, seed=seed), 3)
  _assert_same(make(5), make(5))
  assert not np.array_equal(make(5)[0]['inputs'], make(6)[0]['inputs'])


def test_bad_arguments():
  with pytest.raises(ValueError, match='not divisible'):
    pipeline.make_train_iterator(TASK, 'train', global_batch_size=6, seq_len=8,
                                 seed=0, process_count=4)
  with pytest.raises(ValueError, match='mode'):
    pipeline.make_train_iterator(TASK, 'train', global_batch_size=4, seq_len=8,
                                 seed=0, mode='bucketing')
  # An empty split would make the 'infinite' iterator stop at its first batch.
  with pytest.raises(ValueError, match="split 'train' has no examples"):
    pipeline.make_train_iterator(_task([]), 'train', global_batch_size=4, seq_len=8, seed=0)


def test_unigram_entropy():
  task = _task([{'text': 'ab'}, {'text': 'ba'}])
  # Targets a, b, eos equally often; bos is never a target.
  assert pipeline.unigram_entropy(task, 'train') == pytest.approx(math.log(3))
  prompted = _task([{'text': 'qqqa', 'prompt': 'qqq'}])
  assert pipeline.unigram_entropy(prompted, 'train') == pytest.approx(math.log(2))
