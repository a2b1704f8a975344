"""Image decoding as Caffe does it (util/io.cpp): OpenCV's imdecode with IMREAD_COLOR (BGR, grey and
CMYK converted to 3 channels) and cv::resize with INTER_LINEAR. ``tf db``, ``tf mean`` and the
engines decode through here, so they see the pixels Caffe sees. OpenCV releases the GIL while it
decodes and resizes, so threads decode in parallel.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

cv2.setNumThreads(1)            # callers parallelise across images; no nested thread pools


class NotAnImage(ValueError):
    """Bytes that OpenCV cannot decode."""


def decode(data, resize: Optional[tuple[int, int]] = None) -> np.ndarray:
    """Encoded image bytes -> height x width x 3 BGR uint8, resized to ``resize`` = (width, height)."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if len(data) else None
    if img is None:
        raise NotAnImage("not an image OpenCV can decode")
    return resized(img, resize)


def resized(img: np.ndarray, resize: Optional[tuple[int, int]]) -> np.ndarray:
    """cv::resize(img, Size(width, height)) with INTER_LINEAR, as ReadImageToCVMat does."""
    if not resize or (img.shape[1], img.shape[0]) == tuple(resize):
        return img
    return cv2.resize(img, tuple(int(v) for v in resize), interpolation=cv2.INTER_LINEAR)


def read(path, resize: Optional[tuple[int, int]] = None) -> np.ndarray:
    """An image file as ``decode`` gives it (read and decoded by OpenCV in one call, as cv::imread
    does); OSError if it cannot be read, NotAnImage if not an image."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        if not os.access(path, os.R_OK):
            raise FileNotFoundError(2, "no such file or not readable", str(path))
        return decode(Path(path).read_bytes(), resize)    # an empty or undecodable file: decode says which
    return resized(img, resize)


def encode(img: np.ndarray, ext: str) -> bytes:
    """cv::imencode("." + ext, img), as convert_imageset --encoded does for a resized image."""
    ok, buf = cv2.imencode("." + ext.lower(), img)
    if not ok:
        raise NotAnImage(f"OpenCV cannot encode .{ext}")
    return buf.tobytes()


def planar_into(img: np.ndarray, out: np.ndarray) -> None:
    """HxWxC -> the C×H×W pixels of a Datum (CVMatToDatum), into ``out``: OpenCV's split for 8-bit
    colour images (about 3x faster than numpy's transposed copy), numpy's copy otherwise."""
    planes = list(out)
    if img.dtype != np.uint8 or img.shape[2] == 1 or cv2.split(img, planes)[0] is not planes[0]:
        np.copyto(out, img.transpose(2, 0, 1))
