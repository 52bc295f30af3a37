"""Decoding one sample's source into an array: images, text, wav audio, frame folders, vectors.

Every reader takes the sample's id (``sample``) so a bad file gives a
one-line :class:`~mmal.errors.DataError` naming both. Random choices take a
``numpy.random.Generator`` (None = the deterministic evaluation variant).
Images and audio also come as an :class:`~mmal.data.pool.EncodedSource`
(a file's bytes kept inside a Hugging Face dataset), decoded like a file.
"""

from __future__ import annotations

import wave
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, UnidentifiedImageError

from mmal.data.parsing import list_frames, open_source
from mmal.errors import DataError, one_line

if TYPE_CHECKING:  # pool imports loaders (vector_dim); this is only the annotation
    from mmal.data.pool import EncodedSource

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Kinetics-400 statistics used by torchvision's video models.
VIDEO_MEAN = (0.43216, 0.394666, 0.37645)
VIDEO_STD = (0.22803, 0.22145, 0.216989)
N_FFT = 512
HOP = N_FFT - 353  # window 512 with overlap 353, as in the paper
WAV_MAGIC = (b"RIFF", b"RIFX", b"RF64")
# Leading bytes of the audio formats people hand us instead of WAV, for the message.
NOT_WAV = {b"fLaC": "FLAC", b"OggS": "Ogg", b"ID3": "MP3", b"\xff\xfb": "MP3", b"\xff\xf3": "MP3"}


# ----------------------------------------------------------------------------- images

def read_image(path: Path | EncodedSource, *, sample: str) -> Image.Image:
    """The image at ``path`` (a file, or an encoded source's bytes) as RGB."""
    file = open_source(path, sample=sample)
    try:
        with Image.open(file) as img:
            return img.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"sample {sample}: image file {path} does not exist") from None
    except UnidentifiedImageError:
        raise DataError(f"sample {sample}: cannot read image {path} (not a known image "
                        "format); replace it with a readable image") from None
    except Image.DecompressionBombError as exc:
        raise DataError(f"sample {sample}: image {path} is too large to decode safely "
                        f"({one_line(exc)}); downscale it") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"sample {sample}: cannot read image {path} ({one_line(exc)}); "
                        "replace it with a readable image") from None


def crop_params(width: int, height: int, rng: np.random.Generator | None, *,
                scale: tuple[float, float] = (0.08, 1.0)) -> tuple[int, int, int, int, bool]:
    """(top, left, h, w, flip) of a random resized crop, or the full image without flip."""
    if rng is None:
        return 0, 0, height, width, False
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*scale)
        ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        w = int(round(np.sqrt(target * ratio)))
        h = int(round(np.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w, bool(rng.random() < 0.5)
    side = min(width, height)  # fallback: central square
    return (height - side) // 2, (width - side) // 2, side, side, bool(rng.random() < 0.5)


def image_tensor(img: Image.Image, size: int, params: tuple[int, int, int, int, bool] | None,
                 *, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """(3, size, size) float32, normalized.

    ``params`` from :func:`crop_params` (training), or None: resize the shorter
    side to size*256/224 and crop the centre (evaluation).
    """
    if params is None:
        img = TF.resize(img, int(round(size * 256 / 224)))
        img = TF.center_crop(img, [size, size])
    else:
        top, left, h, w, flip = params
        img = TF.resized_crop(img, top, left, h, w, [size, size])
        if flip:
            img = TF.hflip(img)
    return TF.normalize(TF.to_tensor(img), mean, std)


def load_image(path: Path | EncodedSource, size: int, rng: np.random.Generator | None, *,
               sample: str, augment: Collection[str] = ("crop", "flip")) -> torch.Tensor:
    """(3, size, size) float32 image.

    With ``rng``, the augmentations named in ``augment``: ``crop`` (a random
    resized crop, and a random frame of a frame folder) and ``flip`` (a
    horizontal flip, half the time); without ``rng`` or without ``crop``, the
    evaluation view (see :func:`image_tensor`; a frame folder's middle frame).
    """
    augment = augment if rng is not None else ()
    # A frame folder read as an image: one frame of the clip.
    if isinstance(path, Path) and path.is_dir():
        frames = list_frames(path, sample=sample)
        path = frames[int(rng.integers(len(frames))) if "crop" in augment else len(frames) // 2]
    img = read_image(path, sample=sample)
    return _views([img], size, rng, augment)[0]


def _views(images: list[Image.Image], size: int, rng: np.random.Generator | None,
           augment: Collection[str], *, scale: tuple[float, float] = (0.08, 1.0),
           **stats) -> list[torch.Tensor]:
    """(3, size, size) of each image under one shared draw of ``augment``'s crop and flip."""
    if "crop" in augment:  # the flip is drawn with the crop: the same stream with or without it
        top, left, h, w, flip = crop_params(*images[0].size, rng, scale=scale)
        return [image_tensor(img, size, (top, left, h, w, flip and "flip" in augment), **stats)
                for img in images]
    flip = "flip" in augment and rng.random() < 0.5
    return [image_tensor(img, size, None, **stats).flip(-1) if flip
            else image_tensor(img, size, None, **stats) for img in images]


# ----------------------------------------------------------------------------- video

def frame_indices(available: int, wanted: int, rng: np.random.Generator | None) -> np.ndarray:
    """Sorted indices of ``wanted`` frames: random distinct ones (training) or evenly spaced."""
    if rng is None:
        return np.linspace(0, available - 1, wanted).round().astype(np.int64)
    replace = wanted > available
    return np.sort(rng.choice(available, size=wanted, replace=replace)).astype(np.int64)


def load_clip(folder: Path, frames: int, size: int, rng: np.random.Generator | None, *,
              sample: str, augment: Collection[str] = ("frames", "crop", "flip")) -> torch.Tensor:
    """(3, frames, size, size) float32 clip.

    With ``rng``, the augmentations named in ``augment``: ``frames`` (random
    distinct frames, else evenly spaced), ``crop`` (one random resized crop
    shared by all frames, else the evaluation view) and ``flip`` (all frames
    flipped, half the time).
    """
    augment = augment if rng is not None else ()
    files = list_frames(folder, sample=sample)
    picked = frame_indices(len(files), frames, rng if "frames" in augment else None)
    chosen = [read_image(files[i], sample=sample) for i in picked]
    return torch.stack(_views(chosen, size, rng, augment, scale=(0.3, 1.0), mean=VIDEO_MEAN,
                              std=VIDEO_STD), dim=1)


# ----------------------------------------------------------------------------- audio

def read_wav(path: Path | EncodedSource, sample_rate: int, *, sample: str) -> np.ndarray:
    """Mono waveform (n,) float32 in [-1, 1] at ``sample_rate`` Hz (linear resampling).

    ``path`` is a wav file, or an encoded source holding a wav file's bytes.
    Reads 8- to 32-bit PCM with the standard library; the extensible header
    (which ffmpeg writes for 24-bit or multichannel audio) and float samples,
    which Python 3.11's ``wave`` refuses, go through ``scipy.io.wavfile``.
    """
    file = open_source(path, sample=sample)
    if not isinstance(file, Path):
        _check_wav_bytes(file.getvalue()[:4], path, sample)
    try:
        with wave.open(str(file) if isinstance(file, Path) else file, "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except FileNotFoundError:
        raise DataError(f"sample {sample}: audio file {path} does not exist") from None
    except wave.Error as exc:
        if not str(exc).startswith("unknown format"):
            raise DataError(f"sample {sample}: cannot read wav {path} ({one_line(exc)}); "
                            "mmal reads PCM wav files") from None
        if not isinstance(file, Path):
            file.seek(0)
        rate, signal = _read_wav_scipy(file, path, sample)
    except (EOFError, OSError) as exc:
        raise DataError(f"sample {sample}: cannot read wav {path} ({one_line(exc)}); "
                        "mmal reads PCM wav files") from None
    else:
        signal = _pcm_to_float(raw, width, path, sample)
        usable = len(signal) - len(signal) % channels
        signal = signal[:usable].reshape(-1, channels).mean(axis=1)
    if len(signal) == 0:
        raise DataError(f"sample {sample}: wav {path} holds no audio frames")
    if rate != sample_rate:
        n_out = max(1, int(round(len(signal) * sample_rate / rate)))
        signal = np.interp(np.arange(n_out) * (rate / sample_rate), np.arange(len(signal)), signal)
    return signal.astype(np.float32)


def _check_wav_bytes(head: bytes, source: EncodedSource, sample: str) -> None:
    """DataError naming the format of encoded audio that is not WAV (mmal decodes WAV only)."""
    if head.startswith(WAV_MAGIC):
        return
    found = next((name for magic, name in NOT_WAV.items() if head.startswith(magic)), None)
    what = f"{found} audio" if found else "not WAV audio"
    raise DataError(f"sample {sample}: {source} is {what}; mmal decodes WAV (PCM or float) "
                    "only, so convert the audio to WAV")


def _read_wav_scipy(file: Path | BinaryIO, path: Path | EncodedSource,
                    sample: str) -> tuple[int, np.ndarray]:
    """(rate, mono float32 signal) of a wav the standard library cannot read."""
    from scipy.io import wavfile  # deferred: scipy only for the rare non-PCM wav

    try:
        rate, data = wavfile.read(file)
    except Exception as exc:  # noqa: BLE001 - scipy raises many types on malformed files
        raise DataError(f"sample {sample}: cannot read wav {path} ({one_line(exc)}); "
                        "mmal reads PCM or float wav files") from None
    if data.dtype == np.uint8:
        signal = (data.astype(np.float32) - 128) / 128
    elif data.dtype.kind == "i":  # 24-bit arrives left-justified in int32
        signal = (data / float(2 ** (8 * data.dtype.itemsize - 1))).astype(np.float32)
    elif data.dtype.kind == "f":
        signal = data.astype(np.float32)
    else:
        raise DataError(f"sample {sample}: wav {path} holds {data.dtype} samples; use 8-32 bit "
                        "PCM or float")
    return int(rate), signal.mean(axis=1) if signal.ndim == 2 else signal


def _pcm_to_float(raw: bytes, width: int, path: Path | EncodedSource, sample: str) -> np.ndarray:
    if width == 1:
        return (np.frombuffer(raw, np.uint8).astype(np.float32) - 128) / 128
    if width == 2:
        return np.frombuffer(raw, "<i2").astype(np.float32) / 32768
    if width == 3:
        b = np.frombuffer(raw[: len(raw) - len(raw) % 3], np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        return (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / (1 << 23)
    if width == 4:
        return np.frombuffer(raw, "<i4").astype(np.float32) / 2**31
    raise DataError(f"sample {sample}: wav {path} has {8 * width}-bit samples; use 8-32 bit PCM")


def crop_audio(signal: np.ndarray, length: int, rng: np.random.Generator | None) -> np.ndarray:
    """(length,) window: random start (training) or centred; zero-padded when too short."""
    if len(signal) >= length:
        slack = len(signal) - length
        start = int(rng.integers(0, slack + 1)) if rng is not None else slack // 2
        return signal[start:start + length]
    out = np.zeros(length, dtype=signal.dtype)
    start = (length - len(signal)) // 2
    out[start:start + len(signal)] = signal
    return out


def spectrogram(signal: np.ndarray) -> torch.Tensor:
    """(1, 257, T) float32 log-magnitude STFT, Hann window 512, hop 159 (overlap 353)."""
    x = torch.from_numpy(np.ascontiguousarray(signal, dtype=np.float32))
    spec = torch.stft(x, n_fft=N_FFT, hop_length=HOP, win_length=N_FFT,
                      window=torch.hann_window(N_FFT), center=True, return_complex=True)
    return torch.log(spec.abs() + 1e-7).unsqueeze(0)


def load_audio(path: Path | EncodedSource, sample_rate: int, clip_seconds: float,
               rng: np.random.Generator | None, *, sample: str,
               augment: Collection[str] = ("crop",)) -> torch.Tensor:
    """(1, 257, T) spectrogram of the window :func:`load_waveform` takes."""
    return spectrogram(load_waveform(path, sample_rate, clip_seconds, rng, sample=sample,
                                     augment=augment)[0].numpy())


def load_waveform(path: Path | EncodedSource, sample_rate: int, clip_seconds: float,
                  rng: np.random.Generator | None, *, sample: str,
                  augment: Collection[str] = ("crop",)) -> torch.Tensor:
    """(1, n) float32 waveform of a ``clip_seconds`` window, n = round(clip_seconds * sample_rate).

    The window of :func:`load_audio` (random when ``rng`` is given and
    ``augment`` holds ``crop``, else centred), before any spectrogram: for
    encoders that compute their own features.
    """
    signal = read_wav(path, sample_rate, sample=sample)
    window = crop_audio(signal, int(round(clip_seconds * sample_rate)),
                        rng if "crop" in augment else None)
    return torch.from_numpy(np.ascontiguousarray(window, dtype=np.float32)).unsqueeze(0)


# ----------------------------------------------------------------------------- text, vectors

def load_text(path: Path, *, sample: str) -> str:
    """Contents of a UTF-8 text file, whitespace-normalized."""
    try:
        return " ".join(path.read_text(encoding="utf-8").split())
    except FileNotFoundError:
        raise DataError(f"sample {sample}: text file {path} does not exist") from None
    except (UnicodeDecodeError, OSError) as exc:
        raise DataError(f"sample {sample}: cannot read text {path} ({one_line(exc)}); "
                        "save it as UTF-8") from None


def load_vector(path: Path, *, sample: str, dim: int | None = None) -> np.ndarray:
    """(D,) float32 from a ``.npy`` file (any shape is flattened).

    Raises DataError naming the sample when the file is unreadable, empty, not
    numeric, holds NaN or Inf, or (with ``dim``) has a width other than ``dim``.
    """
    try:
        value = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"sample {sample}: vector file {path} does not exist") from None
    except (ValueError, OSError, EOFError) as exc:
        reason = one_line(exc) if _is_npy(path) else "not a .npy file"
        raise DataError(f"sample {sample}: cannot read vector {path} ({reason}); "
                        "save it with numpy.save") from None
    if not np.issubdtype(value.dtype, np.number) or value.size == 0:
        raise DataError(f"sample {sample}: vector {path} holds {value.dtype} of size "
                        f"{value.size}; expected a non-empty numeric array")
    value = value.reshape(-1).astype(np.float32)
    if dim is not None and value.size != dim:
        raise DataError(f"sample {sample}: vector {path} has {value.size} values, but this "
                        f"split's vectors have {dim} (from its first sample); save every "
                        "sample's vector with the same width")
    if not np.isfinite(value).all():
        raise DataError(f"sample {sample}: vector {path} holds NaN or Inf; fix or remove the "
                        "sample")
    return value


def _is_npy(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(6) == b"\x93NUMPY"
    except OSError:
        return False
