"""Custom-model registry: `custom_model: <name>` loads class `CustomModel` from `model/<name>.py`.

Every file in `model/` is a model; the file name is its registry name. Today a model is a `TorchModelV2` (RLlib's old
API stack, which this project trains on); `MODEL_APIS` maps each supported base class to the function that registers
it with RLlib, so a file holding an RLModule for the new API stack only needs a new entry there.

Model classes are sent to remote env runners and other nodes by value (cloudpickle), so a node that lacks this
checkout still builds the model.

Example:
    >>> from marlkit.models import load_model, register_models
    >>> load_model("fcnet").__name__
    'CustomModel'
    >>> register_models(["fcnet"])  # now `custom_model: fcnet` works in any RLlib config
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

from ray.rllib.models import ModelCatalog
from ray.rllib.models.torch.torch_modelv2 import TorchModelV2

from envs.errors import ConfigError, closest
from envs.user_envs import import_user_file

# MARLKIT_MODEL_DIR points the registry at another folder of model files (default: model/ of this checkout).
MODEL_DIR = Path(os.environ.get("MARLKIT_MODEL_DIR") or Path(__file__).resolve().parent.parent / "model")
CLASS_NAME = "CustomModel"
# Arguments RLlib passes to every TorchModelV2 itself; the rest come from `custom_model_config`.
RLLIB_MODEL_ARGS = ("self", "obs_space", "action_space", "num_outputs", "model_config", "name")

MODEL_APIS = {
    TorchModelV2: ModelCatalog.register_custom_model,
}


def available_models() -> list[str]:
    return sorted(p.stem for p in MODEL_DIR.glob("*.py") if not p.stem.startswith("_"))


def load_model(name: str) -> type:
    """Imports `model/<name>.py` and returns its `CustomModel` class, checked against `MODEL_APIS`."""
    path = MODEL_DIR / f"{name}.py"
    try:
        found = path.is_file()
    except (OSError, ValueError) as error:  # a name longer than the filesystem allows, or with a NUL byte
        shown = name if len(name) <= 40 else f"{name[:40]}..."
        raise ConfigError(f"custom_model '{shown}': not a file name in {MODEL_DIR} "
                          f"({getattr(error, 'strerror', None) or error}); model/ has: "
                          f"{', '.join(available_models()) or 'nothing'}") from None
    if not found:
        raise ConfigError(
            f"custom_model '{name}': no file {path}{closest(name, available_models())}; "
            f"model/ has: {', '.join(available_models()) or 'nothing'}"
        )
    module = import_user_file(f"model.{name}", path, f"custom_model '{name}'")
    model_class = getattr(module, CLASS_NAME, None)
    if not inspect.isclass(model_class):
        raise ConfigError(f"custom_model '{name}': {path} defines no class named {CLASS_NAME}")
    if not any(issubclass(model_class, base) for base in MODEL_APIS):
        bases = ", ".join(base.__name__ for base in MODEL_APIS)
        raise ConfigError(f"custom_model '{name}': {CLASS_NAME} in {path} must subclass {bases}")
    return model_class


def check_model_kwargs(name: str, model_class: type, custom_model_config: dict) -> None:
    """Raises ConfigError when `custom_model_config` has keys the model's constructor does not take."""
    parameters = inspect.signature(model_class.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    accepted = [p for p in parameters if p not in RLLIB_MODEL_ARGS]
    for key in custom_model_config:
        if key not in accepted:
            raise ConfigError(
                f"custom_model_config.{key}: model '{name}' does not take it{closest(key, accepted)}; "
                f"it takes: {', '.join(accepted) or 'nothing'}"
            )


def used_model_names(model: dict, policies: dict | None = None) -> set[str]:
    """The custom models an RLlib config uses: its `model`'s and those of its `multiagent.policies` (id -> PolicySpec,
    or the tuple (class, obs space, action space, config) a checkpoint stores) that set their own."""
    configs = [(spec.config if hasattr(spec, "config") else spec[3]) or {} for spec in (policies or {}).values()]
    return {m["custom_model"] for m in [model, *(c.get("model") or {} for c in configs)] if m.get("custom_model")}


def register_models(names) -> None:
    """Loads each named model and registers it with RLlib under its file name."""
    for name in sorted(set(names)):
        model_class = load_model(name)
        for base, register in MODEL_APIS.items():
            if issubclass(model_class, base):
                register(name, model_class)
