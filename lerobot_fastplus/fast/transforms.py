"""Transforms along time that the FAST tokenizer can quantise: the DCT, orthogonal wavelets, or none.

Every transform here is orthonormal and gives exactly ``T`` coefficients per dimension for any horizon ``T``, so
a chunk ``[T, D]`` always becomes ``T * D`` codes (the split layout and the exact decoding grammar rely on that)
and a squared rounding error in the coefficients is the same squared error in the actions.

* ``dct``: DCT-II with ``norm="ortho"`` (``scipy.fft``), FAST's transform, bit for bit.
* a PyWavelets orthogonal wavelet name (``haar``, ``db2``, ``db4``, ``sym4``, ``coif1``, ...): the discrete
  wavelet transform in ``periodization`` mode, to full depth. Periodization is orthogonal for even lengths
  only, so a level of odd length ``n`` transforms its first ``n - 1`` values and passes the last one on as a
  coefficient of its own. Per dimension the coefficients read coarse to fine, like the DCT's frequencies:
  ``[coefficients of the next level's input, passed-on value, this level's details]``, recursively.
* ``none``: the actions themselves.
"""

from __future__ import annotations

import numpy as np
import pywt
from scipy.fft import dct, idct

DCT = "dct"
NONE = "none"
_WAVELET_MODE = "periodization"


def check_transform(name: str) -> str:
    """The canonical name of a transform, or a ``ValueError`` naming the choices."""
    canonical = str(name).strip().lower()
    if canonical in (DCT, NONE):
        return canonical
    if canonical in pywt.wavelist(kind="discrete") and pywt.Wavelet(canonical).orthogonal:
        return canonical
    raise ValueError(
        f"unknown transform {name!r}: use 'dct' (FAST's), 'none', or an orthogonal PyWavelets wavelet such as "
        "'haar', 'db2', 'db4', 'sym4' or 'coif1' (biorthogonal wavelets would break the T coefficients per "
        "dimension / equal-MSE guarantee)."
    )


def forward(actions: np.ndarray, transform: str) -> np.ndarray:
    """Coefficients ``[B, T, D]`` (float64, a new array) of chunks ``[B, T, D]`` along axis 1 (time)."""
    x = np.asarray(actions, dtype=np.float64)
    if transform == DCT:
        return dct(x, axis=1, norm="ortho")
    if transform == NONE:
        return x.copy()
    return _wavelet_forward(x, pywt.Wavelet(transform))


def inverse(coefficients: np.ndarray, transform: str) -> np.ndarray:
    """Chunks ``[B, T, D]`` (float64, a new array) from their coefficients; the exact inverse of :func:`forward`."""
    c = np.asarray(coefficients, dtype=np.float64)
    if transform == DCT:
        return idct(c, axis=1, norm="ortho")
    if transform == NONE:
        return c.copy()
    return _wavelet_inverse(c, pywt.Wavelet(transform))


def _wavelet_forward(x: np.ndarray, wavelet: pywt.Wavelet) -> np.ndarray:
    n = x.shape[1]
    if n < 2:
        return x.copy()
    even = n - n % 2
    approx, detail = pywt.dwt(x[:, :even], wavelet, mode=_WAVELET_MODE, axis=1)
    return np.concatenate([_wavelet_forward(approx, wavelet), x[:, even:], detail], axis=1)


def _wavelet_inverse(c: np.ndarray, wavelet: pywt.Wavelet) -> np.ndarray:
    n = c.shape[1]
    if n < 2:
        return c.copy()
    half, odd = n // 2, n % 2
    approx = _wavelet_inverse(c[:, :half], wavelet)
    x = pywt.idwt(approx, c[:, half + odd :], wavelet, mode=_WAVELET_MODE, axis=1)
    return np.concatenate([x, c[:, half : half + odd]], axis=1)


def coefficient_label(transform: str) -> str:
    """What the quantised values of ``transform`` are, for messages."""
    if transform == DCT:
        return "DCT coefficient"
    if transform == NONE:
        return "action value"
    return f"{transform} wavelet coefficient"
