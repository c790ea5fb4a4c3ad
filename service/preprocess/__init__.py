"""Request preprocessing: encoded images and audio in, model-ready float32 arrays out.

Everything here is pure, synchronous and thread-safe (no module state is written after import):
the server calls these functions from a thread pool, where Pillow, libsndfile, SciPy and NumPy
release the GIL for the heavy parts. Bad input raises `service.errors.InvalidInputError`; a bad
model configuration raises `ValueError` from the `from_parameters` constructors.
"""

from service.preprocess.audio import (
    AudioSpec,
    StreamWindower,
    Window,
    decode_wav,
    merge_segments,
    prepare_audio,
    resample,
    split_windows,
)
from service.preprocess.image import (
    ImageLimits,
    ImageSpec,
    check_raw_tensor,
    decode_image,
)

__all__ = [
    "AudioSpec",
    "ImageLimits",
    "ImageSpec",
    "StreamWindower",
    "Window",
    "check_raw_tensor",
    "decode_image",
    "decode_wav",
    "merge_segments",
    "prepare_audio",
    "resample",
    "split_windows",
]
