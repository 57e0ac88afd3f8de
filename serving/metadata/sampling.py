"""``--prediction_log_sampling``: a default rate and per-model rates, e.g. ``0.01,demo=1.0``."""

from __future__ import annotations

from dataclasses import dataclass, field

from serving.errors import ConfigError


class SamplingError(ConfigError):
    pass


@dataclass(frozen=True)
class SamplingRates:
    default: float = 0.0
    per_model: dict[str, float] = field(default_factory=dict)

    def rate(self, model: str) -> float:
        return self.per_model.get(model, self.default)


def _rate(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SamplingError(f"{where}: {text!r} is not a number between 0 and 1") from None
    if not 0.0 <= value <= 1.0:
        raise SamplingError(f"{where}: sampling rate {value} is not between 0 and 1")
    return value


def parse_sampling(text: str) -> SamplingRates:
    default, per_model = 0.0, {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" in part:
            model, value = part.split("=", 1)
            per_model[model.strip()] = _rate(value, f"--prediction_log_sampling {model}")
        else:
            default = _rate(part, "--prediction_log_sampling default")
    return SamplingRates(default, per_model)
