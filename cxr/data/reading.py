"""Reading one input file of `cxr predict`: an image (PNG, JPEG, TIFF, BMP; 8- or 16-bit, grey,
RGB or RGBA) or a DICOM object (rescale slope/intercept, VOI LUT or window, MONOCHROME1 inverted;
compressed transfer syntaxes where a decoder is installed), as 8-bit grey. Any problem becomes the
file's status, never an exception; a file found in a folder that is neither an image nor DICOM
(a DICOMDIR, a report) is marked to be left out. Nothing of a DICOM header leaves this module
but the notes it writes (modality, photometric interpretation, frames).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxr.data.images import ImageError, decode_gray
from cxr.data.walk import DICOM_EXTS, by_name, dicom_preamble

MAX_PIXELS = 64_000_000  # larger images are refused before decoding (8000 x 8000)
RADIOGRAPH_MODALITIES = {"CR", "DX", "DR", "RG", "PX"}
MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"  # the SOP class of a DICOMDIR, whatever the file is called
OK, IGNORED = "ok", "ignored: not an image"


class NotAnImage(ImageError):
    """A file found in a folder that holds no picture: left out of the results and counted."""


@dataclass
class Read:
    """One input file after reading: the grey image, or why there is none, and notes."""
    file: str
    image: np.ndarray | None
    status: str
    notes: list[str]


# --------------------------------------------------------------------------- reading
def is_dicom(path: Path, head: bytes) -> bool:
    return path.suffix.lower() in DICOM_EXTS or dicom_preamble(head)


def read_dicom(path: Path) -> tuple[np.ndarray, list[str]]:
    """A DICOM radiograph as 8-bit grey; ImageError says why not."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(str(path))
    except Exception as e:  # noqa: BLE001 - any unreadable DICOM gets one clear status
        raise ImageError(f"not a readable DICOM file ({type(e).__name__})") from e
    sop = getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None) or ds.get("SOPClassUID")
    if str(sop or "") == MEDIA_DIRECTORY:
        raise NotAnImage("a DICOMDIR (an index of the export)")
    if "PixelData" not in ds:
        kind = getattr(sop, "name", "") if sop else ""
        raise ImageError("DICOM file with no pixel data" + (f" ({kind})" if kind and kind != str(sop) else ""))
    notes = []
    modality = str(ds.get("Modality", "") or "")
    if modality and modality not in RADIOGRAPH_MODALITIES:
        notes.append(f"DICOM modality {modality}: not a radiograph")
    try:
        arr = ds.pixel_array
    except Exception as e:  # noqa: BLE001 - missing decoders and broken pixel data alike
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", str(syntax))
        first = (str(e).splitlines() or [type(e).__name__])[0].rstrip(":")
        raise ImageError(f"cannot decode the DICOM pixel data ({name}): {first}. For compressed files install a "
                         "decoder: pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg") from e
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        arr = arr[0]
        notes.append("multi-frame DICOM: first frame used")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if arr.ndim == 3:  # colour DICOM (a photo, a secondary capture)
        arr = arr[..., :3].astype(np.float64).mean(2)
        notes.append(f"{photometric} DICOM converted to grey")
    else:
        arr = apply_modality_lut(arr, ds)
        if "WindowCenter" in ds or "VOILUTSequence" in ds:
            arr = apply_voi_lut(arr, ds)
        if photometric == "MONOCHROME1":
            arr = arr.max() - arr
            notes.append("MONOCHROME1 inverted")
    arr = np.asarray(arr, np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        raise ImageError("blank DICOM image (all pixels equal)")
    gray = np.round((arr - lo) / (hi - lo) * 255).astype(np.uint8)
    data, info = _reencode(gray)
    return data, notes + info["notes"]


def _reencode(gray: np.ndarray) -> tuple[np.ndarray, dict]:
    """Through the same size checks as any other image."""
    import cv2

    ok, png = cv2.imencode(".png", gray)
    return decode_gray(png.tobytes())


def read_file(path: Path, shown: str, named: bool = True) -> Read:
    """Read one file; any problem becomes the status, never an exception. A file found in a folder
    (`named=False`) without an image's extension is read only when it carries the DICOM preamble;
    otherwise it gets the status IGNORED."""
    try:
        with path.open("rb") as f:
            head = f.read(132)
    except OSError as e:
        return Read(shown, None, f"error: unreadable ({e.strerror or e})", [])
    try:
        if not named and by_name(path) == "look" and not dicom_preamble(head):
            raise NotAnImage("no image extension and no DICOM preamble")
        if is_dicom(path, head):
            image, notes = read_dicom(path)
            return Read(shown, image, OK, notes)
        if not head:
            raise ImageError("empty file")
        _check_size(path)
        image, info = decode_gray(path.read_bytes())
        return Read(shown, image, OK, info["notes"])
    except NotAnImage as e:
        return Read(shown, None, IGNORED, [str(e)])
    except ImageError as e:
        return Read(shown, None, f"error: {e}", [])
    except (OSError, MemoryError) as e:
        return Read(shown, None, f"error: unreadable ({e})", [])


def _check_size(path: Path) -> None:
    """Refuse huge images from their header, before decoding them."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # we check the size ourselves, with a clear message
    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception:  # noqa: BLE001 - not something PIL knows: let the decoder say what it is
        return
    if w * h > MAX_PIXELS:
        raise ImageError(f"too large ({w}x{h}); at most {MAX_PIXELS // 1_000_000} million pixels: downsample it first")
