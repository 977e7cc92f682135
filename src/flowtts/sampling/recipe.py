"""How a model samples: steps, guidance strength, time grid and step rule, in one dataclass.

A :class:`SamplingRecipe` turns itself into :meth:`flowtts.CFM.sample` keyword arguments and into
model-file metadata. A distilled student records the recipe it was trained for (``sampling_recipe``), and
everything that samples a model -- inference, evaluation, distillation reports, reward fine-tuning,
export, averaging, ``flowtts info`` -- reads it from here. Files written before the recipe existed carry
the same facts in their ``distill_config``; :meth:`SamplingRecipe.from_metadata` reads those too.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from flowtts.sampling.grids import check_sway, make_grid

METADATA_KEY = "sampling_recipe"
METHODS = ("euler", "midpoint")
GRIDS = ("uniform", "epss", "sway", "custom")  # the grids SamplingRecipe.on_grid builds by name


@dataclass(frozen=True)
class SamplingRecipe:
    """Steps, guidance and time grid of one way of sampling (F5-TTS's inference defaults by default).

    Attributes:
        steps: Solver steps (with ``t_grid``: ``len(t_grid) - 1``).
        cfg_strength: Classifier-free guidance weight (0: no guidance, one network call per step).
        sway_sampling_coef: Sway coefficient of the grid (``None``: no sway).
        use_epss: F5-TTS's EPSS grid for the step counts it has one for, else uniform.
        t_grid: Explicit solver times from 0 to 1 (a distilled student's grid); replaces the three above.
        method: Step rule (``"euler"`` or ``"midpoint"``); :meth:`flowtts.CFM.sample` takes it from the
            model's ``odeint_kwargs``.

    Raises:
        ValueError: A field out of range (steps, guidance, sway range, grid).
    """

    steps: int = 32
    cfg_strength: float = 2.0
    sway_sampling_coef: float | None = -1.0
    use_epss: bool = True
    t_grid: tuple[float, ...] | None = None
    method: str = "euler"

    def __post_init__(self):
        if self.t_grid is not None:
            times = tuple(float(t) for t in self.t_grid)
            if len(times) < 2 or times[0] < 0 or times[-1] > 1 or any(b <= a for a, b in zip(times, times[1:])):
                raise ValueError(f"t_grid must rise strictly within [0, 1] with 2 or more times, got {list(times)}")
            object.__setattr__(self, "t_grid", times)
            object.__setattr__(self, "steps", len(times) - 1)
            object.__setattr__(self, "sway_sampling_coef", None)
            object.__setattr__(self, "use_epss", False)
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {self.steps!r}")
        cfg = self.cfg_strength
        if isinstance(cfg, bool) or not isinstance(cfg, (int, float)) or not math.isfinite(cfg) or cfg < 0:
            raise ValueError(f"cfg_strength must be a finite number >= 0, got {cfg!r}")
        if self.sway_sampling_coef is not None:
            check_sway(self.sway_sampling_coef)
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")

    # ------------------------------------------------------------------ use

    def sample_kwargs(self) -> dict:
        """The keyword arguments of :meth:`flowtts.CFM.sample` this recipe fixes."""
        if self.t_grid is not None:
            return dict(steps=self.steps, cfg_strength=self.cfg_strength, sway_sampling_coef=None, t_grid=self.t_grid)
        return dict(
            steps=self.steps,
            cfg_strength=self.cfg_strength,
            sway_sampling_coef=self.sway_sampling_coef,
            use_epss=self.use_epss,
        )

    def times(self, device: torch.device | str | None = None) -> torch.Tensor:
        """The ``steps + 1`` solver times."""
        if self.t_grid is not None:
            return torch.tensor(self.t_grid, dtype=torch.float32, device=device)
        return make_grid(self.steps, use_epss=self.use_epss, sway_coef=self.sway_sampling_coef, device=device)

    def nfe(self) -> int:
        """Network calls per utterance (guidance counts twice, the midpoint rule doubles the steps)."""
        per_step = 2 if self.method == "midpoint" else 1
        return self.steps * per_step * (2 if self.cfg_strength >= 1e-5 else 1)

    @property
    def grid(self) -> str:
        """The time grid's name: ``"custom"`` (explicit times), ``"uniform"``, ``"epss"``, ``"sway"`` (uniform
        with sway) or ``"epss+sway"``."""
        if self.t_grid is not None:
            return "custom"
        if self.sway_sampling_coef is None:
            return "epss" if self.use_epss else "uniform"
        return "epss+sway" if self.use_epss else "sway"

    def with_overrides(self, **overrides) -> SamplingRecipe:
        """This recipe with the non-``None`` ``overrides``; a new step count or sway drops an explicit grid."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        fields = dataclasses.asdict(self)
        if {"steps", "sway_sampling_coef"} & set(overrides) and "t_grid" not in overrides:
            fields["t_grid"] = None  # the rest of the grid (EPSS, sway) stays as recorded
        fields.update(overrides)
        return SamplingRecipe(**fields)

    # ------------------------------------------------------------------ model files

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, raw: str) -> SamplingRecipe:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in json.loads(raw).items() if k in known}
        if values.get("t_grid") is not None:
            values["t_grid"] = tuple(values["t_grid"])
        return cls(**values)

    def to_metadata(self) -> dict[str, str]:
        """The model-file metadata entry that records this recipe."""
        return {METADATA_KEY: self.to_json()}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str] | None) -> SamplingRecipe | None:
        """The recipe a model file records, ``None`` when it records none.

        Reads ``sampling_recipe``, or the ``distill_config`` of students written before it existed (their
        ``student_steps``, ``student_cfg``, ``student_grid``, ``student_sway`` and ``student_times``).
        """
        metadata = metadata or {}
        if METADATA_KEY in metadata:
            return cls.from_json(metadata[METADATA_KEY])
        raw = metadata.get("distill_config")
        return cls.from_distill_config(json.loads(raw)) if raw else None

    @classmethod
    def on_grid(cls, grid: str, steps: int, cfg_strength: float, *, sway: float = -1.0, times=None) -> SamplingRecipe:
        """The recipe of a grid named as :attr:`grid` names them (``"epss+sway"`` aside).

        Args:
            grid: ``"uniform"``, ``"epss"``, ``"sway"`` or ``"custom"``.
            steps: Solver steps.
            cfg_strength: Guidance weight.
            sway: The ``"sway"`` grid's coefficient.
            times: The ``"custom"`` grid's times (``steps + 1`` of them); ignored by the other grids.

        Raises:
            ValueError: An unknown grid, a custom grid without times, or a field out of range.
        """
        if grid not in GRIDS:
            raise ValueError(f"the grid must be one of {GRIDS}, got {grid!r}")
        if grid == "custom":
            if times is None:
                raise ValueError("the custom grid needs its times")
            return cls(steps=steps, cfg_strength=cfg_strength, t_grid=tuple(times))
        sway_coef = sway if grid == "sway" else None
        return cls(steps=steps, cfg_strength=cfg_strength, sway_sampling_coef=sway_coef, use_epss=grid == "epss")

    @classmethod
    def from_distill_config(cls, config: Mapping) -> SamplingRecipe:
        """The student's recipe in the loose fields of a distillation config written before the recipe
        existed (a dict, as stored in JSON)."""
        steps, grid = int(config.get("student_steps", 4)), config.get("student_grid", "uniform")
        cfg = float(config.get("student_cfg", 0.0))
        times = config.get("student_times")
        grid = "custom" if times is not None else grid  # the times decide, whatever the grid's name
        return cls.on_grid(grid, steps, cfg, sway=float(config.get("student_sway", -1.0)), times=times)

    @classmethod
    def for_model(cls, model, **overrides) -> SamplingRecipe:
        """How ``model`` is meant to be sampled: the recipe it records (a distilled student's), else
        F5-TTS's defaults (32 steps, guidance 2, sway -1, EPSS), with the non-``None`` ``overrides``."""
        recorded = cls.from_metadata(model.metadata)
        method = (getattr(model, "odeint_kwargs", None) or {}).get("method", "euler")
        recipe = recorded if recorded is not None else cls()
        recipe = dataclasses.replace(recipe, method=method) if method in METHODS else recipe
        return recipe.with_overrides(**overrides)
