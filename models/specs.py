"""Which model a run trains: a model spec string, resolved to an uncompiled Keras model.

A spec is one of

* a built-in name (`models/builders.py`: linear, logistic, mlp, cnn);
* ``PATH.py:FUNCTION``: ``FUNCTION(input_shape, num_classes)`` in that file returns an uncompiled
  ``tf.keras.Model`` whose output is logits ``[None, num_classes]`` (classification) or ``[None, 1]``
  (regression);
* ``PATH.keras``: a saved Keras model: its architecture, re-initialized from the seed
  (``init="fresh"``), or with its saved weights (``init="pretrained"``, e.g. pretrained on public data);
* ``object:<sha16>``: a Keras model or a model function handed over in memory (`register_model`, for
  the Python API); it resolves only in the process that registered it.

Every pipeline (the centralized steps, TFF's model_fn, the search trials, the comparison arms, the
audit's reference models) builds through `build_model`, so every form gets the same checks, and a bad
model is a one-line ValueError raised while a run is validated, before anything is written.

"fresh" weights: the architecture is built, then copied with ``clone_model`` under
``set_random_seed(seed)``. The initial weights then depend on the architecture's config and the seed
only, so a function and a .keras file saved from its model start from identical weights (a direct
build draws them in the order the function happened to call its layers, which no file records).
Nothing TensorFlow is imported at module level: the binaries' flag validators use `spec_problem`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

from models import builders
from models.builders import MODELS

INITS = ("fresh", "pretrained")
OBJECT_PREFIX = "object:"
SPEC_FORMS = f"a built-in model ({', '.join(MODELS)}), PATH.py:FUNCTION or PATH.keras"
_PY_SPEC = re.compile(r"^(?P<path>.+\.py):(?P<name>[A-Za-z_][A-Za-z0-9_]*)$")
_MAX_MESSAGE = 300  # characters of a user exception quoted in an error line


def spec_problem(spec: str, allow_objects: bool = True) -> str | None:
    """Why `spec` is not a model spec, by its form only (files are read by `build_model`), or None.

    `allow_objects`: accept ``object:`` specs (they exist only inside the registering process, so a
    command line cannot name one)."""
    if spec in MODELS or _PY_SPEC.match(spec) or (spec.endswith(".keras") and len(spec) > len(".keras")):
        return None
    if spec.startswith(OBJECT_PREFIX):
        if allow_objects:
            return None
        return f"model {spec!r} is an in-memory model of the Python API; give {SPEC_FORMS}"
    if spec.endswith(".py"):
        return f"model {spec!r} names a file but no function: give {spec}:FUNCTION"
    return f"unknown model {spec!r}; expected {SPEC_FORMS}"


def check_init(spec: str, init: str) -> None:
    """ValueError unless `init` is one of INITS and applies to `spec` (no TensorFlow needed)."""
    if init not in INITS:
        raise ValueError(f"model init must be one of {INITS}, got {init!r}")
    problem = spec_problem(spec)
    if problem:
        raise ValueError(problem)
    if init == "pretrained" and (spec in MODELS or _PY_SPEC.match(spec)):
        raise ValueError(
            f"init 'pretrained' starts from saved weights, and model {spec!r} has none: give a saved "
            "model PATH.keras, or use init 'fresh'"
        )


# ---------------------------------------------------------------- the entry point


def build_model(
    spec: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    seed: int = 0,
    width: int | None = None,
    init: str = "fresh",
):
    """The uncompiled Keras model of `spec` for this data, checked against it (ValueError, one line).

    `num_classes` 0 means regression (output [None, 1]). `width` applies to the built-in mlp only.
    The seed is set before building: the same spec, seed and init give the same initial weights.
    """
    check_init(spec, init)
    if spec in MODELS:
        return builders.build_model(spec, input_shape, num_classes, seed, width)
    if width is not None:
        raise ValueError(f"width applies to the mlp model only, not to model {spec!r} (got width={width})")
    import tensorflow as tf

    source = _resolve(spec)
    if init == "pretrained" and source.weights is None:
        raise ValueError(
            f"init 'pretrained' needs saved weights, and {source.label} has none (register the model with "
            "register_model(model, init='pretrained'), or use init 'fresh')"
        )
    input_shape = tuple(int(d) for d in input_shape)
    tf.keras.utils.set_random_seed(seed)
    # Keras names unnamed layers from a process-wide counter: reset, so that layer names do not tell
    # how many models this process built before (the private search's number of runs K is secret)
    tf.keras.backend.reset_uids()
    arch = source.build(input_shape, num_classes)
    if not isinstance(arch, tf.keras.Model):
        raise ValueError(
            f"{source.label} returned {type(arch).__name__}, not a tf.keras.Model; return an uncompiled "
            "tf.keras.Model (Sequential, functional or subclassed) that outputs logits"
        )
    model = _fresh_copy(arch, source, seed)
    if init == "pretrained":
        _set_saved_weights(model, source)
    _check_against_data(model, source.label, input_shape, num_classes)
    return model


def check_compatible(spec: str, input_shape: tuple[int, ...], num_classes: int, init: str = "fresh") -> None:
    """ValueError when `spec` cannot model this data. Built-ins: by name, no TensorFlow needed; other
    specs: the model is built and its inputs, outputs and trainable weights are checked."""
    if spec in MODELS:
        check_init(spec, init)
        builders.check_compatible(spec, input_shape, num_classes)
        return
    build_model(spec, input_shape, num_classes, init=init)


# ---------------------------------------------------------------- resolving a spec


@dataclasses.dataclass(frozen=True)
class _Source:
    """Where a spec's architecture comes from."""

    label: str  # how error messages name the model
    build: Callable[[tuple[int, ...], int], Any]  # (input_shape, num_classes) -> an architecture
    shared: bool  # build returns one object every time (loaded or registered): it is always copied
    weights: Callable[[], list] | None = None  # the saved weights (init="pretrained"), or None


def _resolve(spec: str) -> _Source:
    if spec.startswith(OBJECT_PREFIX):
        return _registered_source(spec)
    match = _PY_SPEC.match(spec)
    if match:
        function = _load_function(match["path"], match["name"], spec)
        return _Source(spec, lambda shape, n: _call(function, spec, shape, n), shared=False)
    model, weights = _load_keras(spec)
    return _Source(spec, lambda shape, n: model, shared=True, weights=lambda: weights)


def _one_line(error: BaseException) -> str:
    """'<ExcType>: <message>' on one line (an error line of a binary must stay one line)."""
    text = " ".join(str(error).split())
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 3] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@contextlib.contextmanager
def _eager() -> Iterator[None]:
    """Loading runs eagerly even inside a TFF graph (a loaded model is cached and copied per build)."""
    import tensorflow as tf

    with tf.init_scope():
        yield


_MODULES: dict[str, tuple[tuple[int, int], Any]] = {}  # absolute path -> (mtime, size), module


def _load_function(path: str, name: str, spec: str) -> Callable:
    module = _cached(
        _MODULES, path, f"model {spec}: {path} does not exist", lambda full: _import_file(full, path)
    )
    function = getattr(module, name, None)
    if function is None:
        defined = sorted(
            n for n, v in vars(module).items() if inspect.isfunction(v) and v.__module__ == module.__name__
        )
        raise ValueError(
            f"{path} has no function {name!r} (it defines {', '.join(defined) or 'no function'}); give "
            f"{path}:FUNCTION with FUNCTION(input_shape, num_classes) returning a tf.keras.Model"
        )
    if not callable(function):
        raise ValueError(
            f"{path}:{name} is a {type(function).__name__}, not a function (input_shape, num_classes)"
        )
    return function


def _import_file(full: str, shown: str):
    """The module of a user's .py file; a failure to import it is the user's (ValueError, one line)."""
    module_name = "_ppml_model_" + hashlib.sha256(full.encode()).hexdigest()[:12]
    module_spec = importlib.util.spec_from_file_location(module_name, full)
    module = importlib.util.module_from_spec(module_spec)
    folder = os.path.dirname(full)
    sys.path.insert(0, folder)  # its own helper modules import as they would beside it
    sys.modules[module_name] = module  # dataclasses and pickling look a module up by name
    try:
        with _eager():
            module_spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - whatever the file raises, it is the user's to fix
        sys.modules.pop(module_name, None)
        raise ValueError(f"{shown} raised {_one_line(e)} (while importing it)") from None
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)
    return module


def _call(function: Callable, label: str, input_shape: tuple[int, ...], num_classes: int):
    try:
        return function(input_shape, num_classes)
    except Exception as e:  # noqa: BLE001 - the user's function: its failure is the user's input
        raise ValueError(f"{label}({input_shape}, {num_classes}) raised {_one_line(e)}") from None


# absolute path -> (mtime, size), (loaded model, its weights). The weights are read once, eagerly, at load:
# Keras swaps the base class of every Functional model between its TF2 and TF1 versions whenever a model
# is built in a TF1 graph (TFF's model_fn), and the TF1 get_weights fails on a model made eagerly.
_KERAS: dict[str, tuple[tuple[int, int], tuple[Any, list]]] = {}


def _load_keras(path: str) -> tuple[Any, list]:
    missing = f"model file {path} does not exist"
    return _cached(_KERAS, path, missing, lambda full: _read_keras(full, path), hint="; save one with "
                   "model.save('name.keras')")  # fmt: skip


def _read_keras(full: str, path: str) -> tuple[Any, list]:
    import tensorflow as tf

    try:
        with _eager():
            model = tf.keras.models.load_model(full, compile=False)
    except Exception as e:  # noqa: BLE001 - an unreadable or foreign file is the user's input
        raise ValueError(f"{path} cannot be loaded as a Keras model: {_one_line(e)}") from None
    if not isinstance(model, tf.keras.Model):
        raise ValueError(f"{path} holds a {type(model).__name__}, not a Keras model")
    with _eager():
        return model, model.get_weights()


def _cached(cache: dict, path: str, missing: str, load: Callable[[str], Any], hint: str = "") -> Any:
    """`load(absolute path)`, kept until the file changes (modification time and size); a missing file
    is one line naming the working directory relative paths start at."""
    full = os.path.abspath(path)
    if not os.path.isfile(full):
        raise ValueError(f"{missing} (relative paths start at the working directory {os.getcwd()}){hint}")
    stat = os.stat(full)
    stamp = (stat.st_mtime_ns, stat.st_size)
    if full not in cache or cache[full][0] != stamp:
        cache[full] = (stamp, load(full))
    return cache[full][1]


# ---------------------------------------------------------------- initial weights and checks


def _fresh_copy(arch, source: _Source, seed: int):
    """`arch` re-initialized from `seed` (see the module docstring), or `arch` itself where Keras
    cannot copy it (a subclassed model, a custom layer whose config does not rebuild it) and it was
    built for this call, already seeded."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    try:
        copy = tf.keras.models.clone_model(arch)
    except Exception as e:  # noqa: BLE001 - Keras raises various errors for what it cannot clone
        if source.shared:
            raise ValueError(
                f"{source.label} cannot be copied to train it ({_one_line(e)}); give a .py function that "
                "builds it, or save it as a functional or Sequential model"
            ) from None
        return arch
    if [tuple(w.shape) for w in copy.weights] != [tuple(w.shape) for w in arch.weights]:
        if source.shared:
            raise ValueError(
                f"{source.label}: its config does not rebuild it (a custom layer's get_config is missing "
                "arguments); give a .py function that builds it"
            )
        return arch
    return copy


def _set_saved_weights(model, source: _Source) -> None:
    import tensorflow as tf

    if not tf.executing_eagerly():  # TFF's model_fn builds the architecture; its state gets the weights
        raise RuntimeError("init 'pretrained' must be built eagerly (federated: set into the initial state)")
    try:
        model.set_weights(source.weights())
    except ValueError as e:
        raise ValueError(
            f"{source.label}: its saved weights do not fit its architecture: {_one_line(e)}"
        ) from None


def _check_against_data(model, label: str, input_shape: tuple[int, ...], num_classes: int) -> None:
    """The model takes one array of the data's example shape and outputs what the labels need."""
    import tensorflow as tf

    inputs = _graph_tensors(model, "inputs")
    if inputs is not None:
        if len(inputs) != 1:
            raise ValueError(
                f"{label} takes {len(inputs)} inputs; the pipelines feed one array of examples of shape "
                f"{input_shape}: give it one input"
            )
        expected = tuple(inputs[0].shape[1:])
        if len(expected) != len(input_shape) or any(
            e not in (None, s) for e, s in zip(expected, input_shape)
        ):
            raise ValueError(
                f"{label} takes inputs of shape {expected}, but the data's examples have shape "
                f"{input_shape}; build it for input_shape {input_shape}"
            )
        outputs = _graph_tensors(model, "outputs") or []
        shapes = [tuple(t.shape) for t in outputs]
    else:  # a subclassed model: one call on a zero batch builds it and shows its output
        try:
            out = model(tf.zeros((1, *input_shape)), training=False)
        except Exception as e:  # noqa: BLE001 - the user's call(): its failure is the user's input
            raise ValueError(
                f"{label} cannot run on a batch of shape {(None, *input_shape)}: {_one_line(e)}"
            ) from None
        shapes = [(None, *tuple(t.shape[1:])) for t in tf.nest.flatten(out)]
    want = (None, num_classes) if num_classes else (None, 1)
    what = f"{num_classes} logits, one per class" if num_classes else "one number per example (regression)"
    if len(shapes) != 1 or len(shapes[0]) != 2 or shapes[0][1] != want[1]:
        shown = shapes[0] if len(shapes) == 1 else shapes
        raise ValueError(
            f"{label} outputs shape {shown}, but the labels need {want}: its last layer must output {what}"
        )
    if not model.trainable_weights:
        raise ValueError(f"{label} has no trainable weights, so there is nothing to train: unfreeze a layer")


def _graph_tensors(model, which: str) -> list | None:
    """model.inputs / model.outputs of a functional or Sequential model; None for a subclassed one."""
    try:
        tensors = getattr(model, which)
    except AttributeError:
        return None
    return list(tensors) if tensors else None


# ---------------------------------------------------------------- in-memory models (the Python API)


@dataclasses.dataclass(frozen=True)
class _Registered:
    obj: Any  # a tf.keras.Model, or a function (input_shape, num_classes) -> tf.keras.Model
    weights: list | None  # a model's weights when it was registered for init="pretrained"


_REGISTRY: dict[str, _Registered] = {}


def register_model(obj: Any, init: str = "fresh") -> str:
    """Registers a Keras model or a model function in this process; returns its spec 'object:<sha16>'.

    The hash is of the content, so the same model registered again (a notebook cell rerun) gets the
    same spec, and a rerun into the same output folder is recognized: of a model's JSON config (and,
    for init="pretrained", of its weights, copied now: later training of `obj` does not change the run),
    of a function's qualified name and source.
    """
    import tensorflow as tf

    if init not in INITS:
        raise ValueError(f"model init must be one of {INITS}, got {init!r}")
    digest = hashlib.sha256()
    weights = None
    if isinstance(obj, tf.keras.Model):
        if not (isinstance(obj, tf.keras.Sequential) or getattr(obj, "_is_graph_network", False)):
            raise ValueError(
                f"a subclassed model instance ({type(obj).__name__}) cannot be copied to train it; pass the "
                "function (input_shape, num_classes) -> model that builds it instead"
            )
        digest.update(b"model\0" + obj.to_json().encode())
        if init == "pretrained":
            weights = [w.copy() for w in obj.get_weights()]
            for w in weights:
                digest.update(f"{w.dtype}{w.shape}".encode() + w.tobytes())
    elif callable(obj):
        if init == "pretrained":
            raise ValueError("init 'pretrained' needs a model with weights, not a function; pass the model")
        digest.update(b"function\0" + _function_identity(obj).encode())
    else:
        raise ValueError(
            f"a model is a tf.keras.Model or a function (input_shape, num_classes) -> model, not "
            f"{type(obj).__name__}"
        )
    spec = OBJECT_PREFIX + digest.hexdigest()[:16]
    _REGISTRY[spec] = _Registered(obj, weights)
    return spec


def _function_identity(function: Callable) -> str:
    name = (
        f"{getattr(function, '__module__', '')}.{getattr(function, '__qualname__', type(function).__name__)}"
    )
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):  # defined where no source is kept (an interactive prompt, a C function)
        code = getattr(function, "__code__", None)
        source = repr((code.co_code, code.co_consts)) if code is not None else repr(function)
    return name + "\0" + source


def _registered_source(spec: str) -> _Source:
    import tensorflow as tf

    entry = _REGISTRY.get(spec)
    if entry is None:
        raise ValueError(
            f"model {spec} is not registered in this process: in-memory models live in the process that "
            f"registered them (register_model); give {SPEC_FORMS} to run it elsewhere"
        )
    if isinstance(entry.obj, tf.keras.Model):
        weights = None if entry.weights is None else (lambda: entry.weights)
        return _Source(f"the model {entry.obj.name!r} ({spec})", lambda shape, n: entry.obj, True, weights)
    label = f"{getattr(entry.obj, '__qualname__', 'the function')} ({spec})"
    return _Source(label, lambda shape, n: _call(entry.obj, label, shape, n), shared=False)
