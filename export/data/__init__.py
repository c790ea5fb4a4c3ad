"""Data sets for the training half.

Modules, one concern each:

* ``errors``         — :class:`DatasetError`, the one exception of this package;
* ``idx``            — IDX files, the Fashion-MNIST / MNIST loaders and class names;
* ``images``         — :class:`ImagePreprocessing` (the transform as plain numbers, for the serving
  config) and :class:`ArrayImageDataset` over uint8 arrays;
* ``folder``         — :class:`ImageFolderDataset` over ``root/<class>/<images>``;
* ``wad`` / ``midi`` — Doom WAD lumps, DMX sounds, the voice exclusion rule, MUS → MIDI;
* ``audio_tools``    — external renderers (espeak-ng, flite, sox, fluidsynth) and audio I/O;
* ``speech_sources`` — voices and source rendering for the speech corpus; ``speech_text`` its text;
* ``speech_packages`` — recorded speech and sounds shipped by Debian packages, and their splits;
* ``speech_synth``   — NumPy-synthesised events, steady noises and near-silence;
* ``speech_channel`` — reverberation, telephone band, GSM and mu-law round trips;
* ``speech_mix``     — how windows are drawn from sources (the label rule, mixing);
* ``speech``         — :func:`build_speech_corpus`, cached 1 s windows labelled speech / no speech;
* ``speech_dataset`` — :class:`SpeechWindowDataset` with train-time augmentation.
"""

from export.data.errors import DatasetError
from export.data.folder import ImageFolderDataset
from export.data.idx import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    load_fashion_mnist,
    load_idx_dataset,
    read_idx,
    write_idx,
)
from export.data.images import ArrayImageDataset, ImagePreprocessing
from export.data.speech import (
    SAMPLE_RATE,
    WINDOW_SAMPLES,
    SpeechCorpus,
    build_speech_corpus,
    load_speech_corpus,
)
from export.data.speech_dataset import SpeechWindowDataset

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "SAMPLE_RATE",
    "WINDOW_SAMPLES",
    "ArrayImageDataset",
    "DatasetError",
    "ImageFolderDataset",
    "ImagePreprocessing",
    "SpeechCorpus",
    "SpeechWindowDataset",
    "build_speech_corpus",
    "load_fashion_mnist",
    "load_idx_dataset",
    "load_speech_corpus",
    "read_idx",
    "write_idx",
]
