"""Speech detection over a model's windows: whole clips and streams.

A clip is resampled to the model's rate and cut into windows (service.preprocess.audio); the
windows go to the model's batcher in chunks of at most max_batch_size, no more than
MAX_CHUNKS_IN_FLIGHT at a time per request, so one long clip cannot take the whole queue from
other clients. A window's probability comes from the model's `speech_index` output class;
segments are runs of windows at or above the threshold.

A stream (`SpeechStream`) windows its audio as it arrives and reports every window as soon as
it is complete, and every segment as soon as no later window can extend it; its duration is
bounded by --max-stream-seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from service.dataplane import postprocess
from service.dataplane.records import SpeechUpdate
from service.errors import InvalidInputError
from service.model import ServedModel
from service.preprocess.audio import AudioSpec, StreamWindower, Window, resample
from service.spec import ModelSpec, SpeechSettings

# Per request: how many window batches may wait in the model's queue at once.
MAX_CHUNKS_IN_FLIGHT = 4


def threshold(requested: float, settings: SpeechSettings) -> float:
    """A request's decision threshold (0: the model's own), refusing ones no probability meets."""
    if requested == 0:
        return settings.threshold
    if not 0 < requested <= 1:  # NaN fails this too
        raise InvalidInputError(
            f"threshold must be in (0, 1], or 0 for the model's default "
            f"({settings.threshold:g}); got {requested:g}"
        )
    return requested


async def probabilities(
    served: ServedModel, windows: npt.NDArray[np.float32], deadline: float | None
) -> npt.NDArray[np.float32]:
    """Speech probability per window; windows beyond max_batch_size go as several batches."""
    spec = served.spec
    assert spec.speech is not None and spec.audio is not None  # a speech model, checked at load
    tensor = spec.inputs[0]
    shape = tuple(windows.shape[1] if d == -1 else d for d in tensor.dims)
    x = windows.reshape((len(windows), *shape)).astype(tensor.np_dtype, copy=False)
    output = spec.outputs[0].name
    if not spec.batching:
        chunks = [x[i] for i in range(len(x))]
    else:
        chunks = [x[i : i + spec.max_batch_size] for i in range(0, len(x), spec.max_batch_size)]
    gate = asyncio.Semaphore(MAX_CHUNKS_IN_FLIGHT)

    async def run(chunk: npt.NDArray[Any]) -> npt.NDArray[Any]:
        async with gate:
            result = await served.infer({tensor.name: chunk}, deadline=deadline)
        out = result[output]
        return out.reshape(1, -1) if not spec.batching else out.reshape(len(chunk), -1)

    logits = np.concatenate(await _all(run(c) for c in chunks))
    return postprocess.speech_probabilities(
        logits, spec.output_activation, spec.speech.speech_index
    )


async def _all(coroutines: Iterable[Awaitable[Any]]) -> list[Any]:
    """gather() that cancels the siblings when one fails (a failed chunk fails the request)."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class SpeechStream:
    """One speech stream's state: model, windower, open segment, duration so far."""

    def __init__(
        self,
        served: ServedModel,
        sample_rate: int,
        decision: float,
        max_seconds: float,
    ) -> None:
        spec: ModelSpec = served.spec
        assert spec.audio is not None  # a speech model, checked at load
        self.served = served
        self.audio: AudioSpec = spec.audio
        self.sample_rate = sample_rate or self.audio.sample_rate
        self.max_seconds = max_seconds
        self.windower = StreamWindower(self.audio)
        self.segments = postprocess.SegmentTracker(decision)
        self._received = 0  # samples at the client's rate

    def chunk(
        self, samples: Sequence[float] | npt.NDArray[np.floating[Any]], pcm_s16le: bytes
    ) -> npt.NDArray[np.float32]:
        """One message's audio at the model's rate.

        Known limitation: a stream at another rate is resampled chunk by chunk, so the filter
        sees each chunk's edges (small artefacts there, and the length rounds per chunk); send
        audio at the model's sample rate when exact windows matter.
        """
        if len(samples) and pcm_s16le:
            raise InvalidInputError("a stream message carries samples or pcm_s16le, not both")
        if pcm_s16le:
            if len(pcm_s16le) % 2:
                raise InvalidInputError(
                    f"pcm_s16le has {len(pcm_s16le)} bytes; 16-bit samples need an even count"
                )
            x = np.frombuffer(pcm_s16le, dtype="<i2").astype(np.float32) / np.float32(32768)
        else:
            x = np.asarray(samples, dtype=np.float32)
        self._received += len(x)
        if self._received > self.max_seconds * self.sample_rate:
            raise InvalidInputError(
                f"stream is longer than {self.max_seconds:g} s (--max-stream-seconds); "
                "end it and open a new one"
            )
        if len(x) and self.sample_rate != self.audio.sample_rate:
            x = resample(x, self.sample_rate, self.audio.sample_rate)
        return x

    async def step(
        self, windows: Sequence[Window], deadline: float | None, *, final: bool
    ) -> SpeechUpdate:
        results: list[postprocess.WindowResult] = []
        if windows:
            x = np.stack([w.samples for w in windows])
            probs = await probabilities(self.served, x, deadline)
            starts = [w.start for w in windows]
            ends = [w.start + w.valid for w in windows]
            results = postprocess.window_results(starts, ends, probs, self.audio.sample_rate)
        closed = self.segments.add(results)
        if final:
            closed += self.segments.close()
        return SpeechUpdate(self.served.name, self.served.version, results, closed, final)
