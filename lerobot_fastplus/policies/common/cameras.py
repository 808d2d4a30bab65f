"""Camera inputs of the pi-family prefix for state-only datasets.

Core pi05 and pi0_fast raise "All image features are missing from the batch" both for a config without any camera
and for one whose only cameras are ``empty_cameras`` blanks (which a state-only dataset never provides), although
their prefix embedding takes any number of images.
"""

from __future__ import annotations

import torch
from lerobot.utils.constants import OBS_IMAGES, OBS_LANGUAGE_TOKENS
from torch import Tensor

EMPTY_CAMERA_PREFIX = f"{OBS_IMAGES}.empty_camera_"


class StateOnlyCameras:
    """Mixin placed before a core pi05 / pi0_fast policy class, overriding its ``_preprocess_images``.

    - no camera configured: the prefix is the prompt alone (task and state tokens);
    - only ``empty_cameras`` blanks configured and none in the batch: blank images (-1, SigLIP's padding value),
      masked out, as core adds for each absent camera when at least one camera is present;
    - otherwise core's code runs unchanged, so a real camera missing from every observation still fails loudly.
    """

    def _preprocess_images(self, batch: dict[str, Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        cameras = list(self.config.image_features)
        if not cameras:
            return [], []
        if any(key in batch for key in cameras) or not all(key.startswith(EMPTY_CAMERA_PREFIX) for key in cameras):
            return super()._preprocess_images(batch)
        batch_size = batch[OBS_LANGUAGE_TOKENS].shape[0]
        device = next(self.parameters()).device
        height, width = self.config.image_resolution
        blank = torch.full((batch_size, 3, height, width), -1.0, device=device)
        masked = torch.zeros(batch_size, dtype=torch.bool, device=device)
        return [blank] * len(cameras), [masked] * len(cameras)
