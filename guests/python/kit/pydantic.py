"""Just enough of pydantic for a pipeline's `class Valves(BaseModel)` to build unchanged
(pydantic itself needs a native extension, which a component cannot load)."""

from sluice_pipeline import BaseModel, Field

__all__ = ["BaseModel", "Field"]
