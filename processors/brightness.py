"""An example of your own processor for the compose stack: is the scene too dark to see?

Files in this folder are mounted into every detektr container at /app/processors (on PYTHONPATH).
To run this one: in .env set DETEKTR_PROCESSORS=brightness, CUSTOM_QUEUES=brightness and
COMPOSE_PROFILES=custom, then `docker compose up -d`. Results go to results:brightness.
"""

from __future__ import annotations

import cv2
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from detektr import Frame, ProcessorSettings, processor


class BrightnessSettings(ProcessorSettings):
    """Read from DETEKTR_BRIGHTNESS_* and checked when the worker starts."""

    model_config = SettingsConfigDict(env_prefix="DETEKTR_BRIGHTNESS_")
    dark_below: float = Field(40.0, ge=0, le=255, description="Mean grey level under which the scene is dark.")


@processor("brightness", capabilities=["low_light"], capacity=2, settings=BrightnessSettings)
def measure_brightness(frame: Frame, settings: BrightnessSettings) -> dict:
    """Mean grey level of the frame, and whether it is under the dark threshold."""
    level = float(cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY).mean())
    return {"brightness": round(level, 1), "dark": level < settings.dark_below}
