"""tfds_text task through tfds.testing.mock_data (offline, no TensorFlow).

mock_data(policy=USE_CODE) works with tfds.data_source in tfds 4.9.10 when a
split is named (the split-dict form returns {}), ignores split slicing, and
gives every split the same random examples.
"""
import sys

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments.data import pipeline
from experiments.tasks import get_task
from experiments.tasks import tfds_text

NUM_EXAMPLES = 6


@pytest.fixture
def mock_tfds():
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    yield


def _config(tmp_path, **kwargs):
  return ml_collections.ConfigDict(dict(data_dir=str(tmp_path), **kwargs))


def test_imdb_reviews_with_labels_batches(tmp_path, mock_tfds):
  task = get_task('tfds_text', _config(
      tmp_path, dataset='imdb_reviews', label_key='label',
      splits={'train': 'train', 'validation': 'test[:50%]', 'test': 'test[50%:]'}))
  assert task.splits == ('train', 'validation', 'test')
  assert task.label_names == {'label': ('neg', 'pos')}
  raw = tfds.data_source('imdb_reviews', split='train', data_dir=str(tmp_path),
                         builder_kwargs={'file_format': 'array_record'})
  train = task.source('train')
  assert len(train) == NUM_EXAMPLES
  for i in range(NUM_EXAMPLES):
    example = train[i]
    assert set(example) == {'text', 'label'} and isinstance(example['text'], str)
    assert example == {'text': raw[i]['text'], 'label': int(raw[i]['label'])}
  batch = next(pipeline.make_train_iterator(
      task, 'train', global_batch_size=2, seq_len=16, seed=0))
  assert batch['inputs'].shape == (2, 16)
  assert set(batch['label']) <= {0, 1}
  assert 'tensorflow' not in sys.modules


def test_lm1b_plain_text_and_bad_keys(tmp_path, mock_tfds):
  task = get_task('tfds_text', _config(tmp_path, dataset='lm1b'))
  assert task.label_names is None and task.splits == ('train', 'test')
  assert set(task.source('test')[0]) == {'text'}
  with pytest.raises(ValueError, match=r"text_key='body' is not a feature of lm1b"):
    get_task('tfds_text', _config(tmp_path, dataset='lm1b', text_key='body'))
  with pytest.raises(ValueError, match='tfds_text needs config.dataset'):
    get_task('tfds_text', _config(tmp_path))
  with pytest.raises(ValueError, match='label_threshold is set but label_key'):
    get_task('tfds_text', _config(tmp_path, dataset='lm1b', label_threshold=0.5))


def test_threshold_turns_float_scores_into_binary_labels():
  # civil_comments' builder cannot be mocked without TensorFlow here, so the
  # view is checked on records shaped like its features.
  records = [{'text': b'fine', 'toxicity': np.float32(0.1)},
             {'text': b'rude', 'toxicity': np.float32(0.5)},
             {'text': 'very rude', 'toxicity': np.float32(0.9)}]
  view = tfds_text.TextView(records, 'text', 'toxicity', label_threshold=0.5)
  assert [view[i] for i in range(3)] == [
      {'text': 'fine', 'label': 0}, {'text': 'rude', 'label': 1},
      {'text': 'very rude', 'label': 1}]
  strict = tfds_text.TextView(records, 'text', 'toxicity', label_threshold=0.8)
  assert [strict[i]['label'] for i in range(3)] == [0, 0, 1]
