"""The contract a mask-removal method implements, and the registry that finds methods by name.

A method is a :class:`Predictor` subclass with one batched method, :meth:`Predictor.predict`
(after lm-evaluation-harness's ``LM`` in ``lm_eval/api/model.py``). The evaluator never calls
``predict`` directly: :func:`run_predictor` checks the inputs, resizes to the method's declared
``input_size`` and back, and checks the outputs, raising :class:`PredictorOutputError` that names the
method and what was expected and what arrived.

Methods are found by name (after lm-eval's ``lm_eval/api/registry.py``): :func:`register` takes a
class or a lazy ``"package.module:Class"`` string (imported only when used), refuses duplicates and
non-Predictor classes, and :func:`get_predictor_class` answers an unknown name with "did you mean ...".
Third-party packages add methods through the ``maskbench.methods`` entry-point group, e.g. in their
``pyproject.toml``::

    [project.entry-points."maskbench.methods"]
    my-method = "my_package.module:MyPredictor"

The entry-point name is the method name; the target is loaded only when the method is used. maskbench's
own methods (``maskbench.baselines``) are registered the same way, by maskbench's own ``pyproject.toml``,
and listed as ``built-in``; a plug-in cannot take a built-in's name.

A method that samples noise draws it from the ``generator`` that :func:`run_predictor` passes (a
``torch.Generator`` seeded from the run's seed and the batch's sample ids, :func:`batch_generator`), never
from global RNGs: the same seed then gives the same outputs whatever the worker count or batch order.
A method may read more of each sample's record than the image and the mask (e.g. ``landmarks``) by
listing the fields in :attr:`Predictor.extra_inputs`.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib
import importlib.metadata
import inspect
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np

from ..core.errors import MaskbenchError

__all__ = [
    "TRACKS",
    "ENTRY_POINT_GROUP",
    "Predictor",
    "PredictorOutput",
    "PredictorInputError",
    "PredictorOutputError",
    "RegistryError",
    "UnknownMethodError",
    "MethodOptionError",
    "MethodInfo",
    "register",
    "unregister",
    "get_predictor_class",
    "create_predictor",
    "check_options",
    "blind_predictor_class",
    "method_options",
    "list_methods",
    "reload_entry_points",
    "registry_warnings",
    "method_info",
    "run_predictor",
    "resolve_device",
    "batch_generator",
    "parse_method_args",
    "EXTRA_INPUTS",
]

#: ``given-mask``: the method receives the true hole mask; ``blind``: it must find the mask itself.
TRACKS = ("given-mask", "blind")
ENTRY_POINT_GROUP = "maskbench.methods"
#: Record fields a method may ask for through :attr:`Predictor.extra_inputs`, with their array shapes per
#: sample; point coordinates are in pixels of the image the method receives (rescaled with it).
EXTRA_INPUTS = {"landmarks": (68, 2), "face_box": (4,)}
_OWN_DIST = "maskbench"


class PredictorInputError(ValueError):
    """The images or masks handed to a predictor have the wrong shape, dtype or track."""


class PredictorOutputError(RuntimeError):
    """A predictor returned outputs of the wrong type, shape or dtype (the message names the method)."""


class RegistryError(MaskbenchError, ValueError):
    """A registration is invalid: duplicate name, not a Predictor subclass, or a bad lazy target."""


class MethodOptionError(MaskbenchError, ValueError):
    """A method option (``--method-arg key=value``) the method does not take, or one not written ``key=value``."""


class UnknownMethodError(MaskbenchError, LookupError):
    """No method is registered under a name (the message suggests close names)."""

    def __str__(self) -> str:  # LookupError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class PredictorOutput:
    """What :meth:`Predictor.predict` returns.

    Attributes:
        images: ``(N, H, W, 3) uint8`` RGB, the restored faces, in input order.
        masks: ``(N, H, W) bool`` predicted hole masks (True = hole) on the ``blind`` track; ``None``
            on the ``given-mask`` track.
        landmarks: optional ``(N, 68, 2) float32`` iBUG landmarks the method predicted, ``(x, y)`` input
            pixels; the evaluator scores them against the dataset's (``landmark_nme``).
    """

    images: np.ndarray
    masks: np.ndarray | None = None
    landmarks: np.ndarray | None = None


class Predictor(ABC):
    """Base class of every mask-removal method.

    Subclasses set the class attributes and implement :meth:`predict`.

    Class attributes:
        name: the method's name; may be empty, then the instance :func:`create_predictor` makes takes the
            name it was registered under (the class itself is never changed). A trainable class (one with a
            ``trainer``) must state it, and be registered under it: its trainer, checkpoints and weights'
            cards use it.
        track: ``"given-mask"`` or ``"blind"`` (see :data:`TRACKS`).
        input_size: the square side the method works at, or ``None`` for any size;
            :func:`run_predictor` resizes to it and back.
        needs_gpu: True if the method is impractical without CUDA (it still must run on CPU).
        description: one line for ``maskbench methods``.
        thread_safe: True if :meth:`predict` may run on two batches at once from different threads
            (the evaluator otherwise serialises calls; default False).
        extra_inputs: record fields :meth:`predict` receives as keyword arguments, from
            :data:`EXTRA_INPUTS` (e.g. ``("landmarks",)``: ``(N, 68, 2) float32``).
        trainer: ``"package.module:Class"`` of the method's :class:`maskbench.train.loop.Trainable` if it
            can be trained with ``maskbench train``, else ``None``.

    Args:
        device: ``"cpu"`` or ``"cuda"`` (already resolved, see :func:`resolve_device`).
        **kwargs: method options (variants; ``--method-arg key=value`` on the command line); unknown
            options should raise ``TypeError``.
    """

    name: ClassVar[str] = ""
    track: ClassVar[str] = "given-mask"
    input_size: ClassVar[int | None] = None
    needs_gpu: ClassVar[bool] = False
    description: ClassVar[str] = ""
    thread_safe: ClassVar[bool] = False
    extra_inputs: ClassVar[tuple[str, ...]] = ()
    trainer: ClassVar[str | None] = None

    def __init__(self, device: str = "cpu", **kwargs: Any):
        if kwargs:
            raise TypeError(f"method {self.name!r} takes no options, got {', '.join(kwargs)}")
        self.device = device

    @classmethod
    def weights_status(cls) -> str:
        """``"none needed"``, ``"available"`` or ``"missing: <how to get them>"``; must not download."""
        return "none needed"

    @classmethod
    def weights_card(cls, **options: Any) -> dict[str, Any] | None:
        """What the weights the options select are (training budget, data, loss network), or ``None``
        for a method without weights. Recorded in every results manifest; must not download."""
        return None

    @classmethod
    def weights_fingerprint(cls, **options: Any) -> str | None:
        """A short hash of the weights file the options select (part of the results key), or ``None``."""
        return None

    @abstractmethod
    def predict(self, images: np.ndarray, masks: np.ndarray | None, **kwargs: Any) -> PredictorOutput:
        """Restore a batch of masked faces.

        Args:
            images: ``(N, H, W, 3) uint8`` RGB masked faces (``H = W = input_size`` when declared).
            masks: ``(N, H, W) bool`` hole masks (True = hole) on the ``given-mask`` track, ``None`` on
                the ``blind`` track.
            generator: (keyword, passed when the signature accepts it) a CPU ``torch.Generator`` for any
                noise the method draws, seeded per batch (:func:`batch_generator`).
            **extras: the fields of :attr:`extra_inputs`, each an array with a leading ``N`` axis.

        Returns:
            :class:`PredictorOutput` with ``N`` images of the input size, in input order.
        """


@dataclass(frozen=True)
class MethodInfo:
    """A registry row, as listed by ``maskbench methods``.

    Attributes:
        name, track, input_size, needs_gpu, weights, description: as on the class;
        source: ``"built-in"``, ``"register()"`` or ``"entry point <dist>"``;
        error: why the class could not be loaded, or ``""``;
        trainable: the method can be trained with ``maskbench train``;
        training: the committed weights' training budget in words (``""`` when none).
    """

    name: str
    track: str
    input_size: int | None
    needs_gpu: bool
    weights: str
    description: str
    source: str
    error: str = ""
    trainable: bool = False
    training: str = ""


# name -> class or "module:Class"; source per name
_REGISTRY: dict[str, type[Predictor] | str] = {}
_SOURCES: dict[str, str] = {}
_LOCK = threading.RLock()
_ENTRY_POINTS_LOADED = False
_SHADOWED: list[str] = []


def _check_class(name: str, cls: Any) -> type[Predictor]:
    if not (isinstance(cls, type) and issubclass(cls, Predictor)):
        raise RegistryError(f"method {name!r}: {cls!r} is not a subclass of maskbench.methods.predictors.Predictor")
    if cls.track not in TRACKS:
        raise RegistryError(f"method {name!r}: track must be one of {TRACKS}, got {cls.track!r}")
    if cls.input_size is not None and (not isinstance(cls.input_size, int) or cls.input_size < 8):
        raise RegistryError(f"method {name!r}: input_size must be None or an int >= 8, got {cls.input_size!r}")
    if cls.trainer and cls.name != name:  # the one name of a learned method: its weights and runs carry it
        said = f"states the name {cls.name!r}" if cls.name else "states no name"
        raise RegistryError(f"method {name!r}: trainable class {cls.__qualname__} {said}; a trainable class must "
                            "state the name it is registered under (its trainer and weights' cards use it)")
    return cls


def register(name: str, target: type[Predictor] | str, *, source: str = "register()") -> None:
    """Register a method under ``name``.

    Args:
        name: the method's name (lower-case, no spaces, e.g. ``"telea"``).
        target: a :class:`Predictor` subclass, or a lazy ``"package.module:Class"`` string imported on
            first use.
        source: where the registration came from (shown by ``maskbench methods``).

    Raises:
        RegistryError: ``name`` is taken or malformed, ``target`` is not a Predictor subclass, or a
            lazy string is not of the form ``"module:Class"``.
    """
    if not name or name != name.strip() or " " in name:
        raise RegistryError(f"method name must be a non-empty word, got {name!r}")
    if isinstance(target, str):
        mod, _, attr = target.partition(":")
        if not mod or not attr:
            raise RegistryError(f"method {name!r}: lazy target must be 'package.module:Class', got {target!r}")
    else:
        _check_class(name, target)
    with _LOCK:
        if name in _REGISTRY:
            raise RegistryError(f"method {name!r} is already registered ({_SOURCES.get(name, '?')})")
        _REGISTRY[name] = target
        _SOURCES[name] = source


def unregister(name: str) -> None:
    """Remove ``name`` from the registry (for tests and interactive use); missing names are ignored."""
    with _LOCK:
        _REGISTRY.pop(name, None)
        _SOURCES.pop(name, None)


def _ensure_loaded() -> None:
    """Register the entry points (maskbench's own, the built-ins, first), once per process."""
    global _ENTRY_POINTS_LOADED
    with _LOCK:
        if _ENTRY_POINTS_LOADED:
            return
        _ENTRY_POINTS_LOADED = True
        eps = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
        eps.sort(key=lambda ep: (getattr(ep.dist, "name", None) or "?") != _OWN_DIST)  # stable: built-ins first
        for ep in eps:
            dist = getattr(ep.dist, "name", None) or "?"
            if dist == _OWN_DIST:
                if ep.name not in _REGISTRY:
                    register(ep.name, ep.value, source="built-in")
                continue
            if ep.name in _REGISTRY:
                # a plug-in cannot shadow a built-in or an explicit registration
                _SHADOWED.append(f"entry point {ep.name!r} from {dist} ignored: name already registered")
                continue
            register(ep.name, ep.value, source=f"entry point {dist}")


def reload_entry_points() -> None:
    """Forget entry-point registrations and scan the ``maskbench.methods`` group again."""
    global _ENTRY_POINTS_LOADED
    with _LOCK:
        for name in [n for n, s in _SOURCES.items() if s.startswith("entry point") or s == "built-in"]:
            _REGISTRY.pop(name, None)
            _SOURCES.pop(name, None)
        _SHADOWED.clear()
        _ENTRY_POINTS_LOADED = False
    _ensure_loaded()


def registry_warnings() -> list[str]:
    """Entry points that were ignored because their name was already taken."""
    _ensure_loaded()
    return list(_SHADOWED)


def get_predictor_class(name: str) -> type[Predictor]:
    """The class registered under ``name``, importing a lazy target on first use.

    Raises:
        UnknownMethodError: no such name (the message lists close matches).
        RegistryError: the lazy target cannot be imported or is not a Predictor subclass.
    """
    _ensure_loaded()
    with _LOCK:
        target = _REGISTRY.get(name)
    if target is None:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(sorted(_REGISTRY))}"
        raise UnknownMethodError(f"unknown method {name!r}{hint}")
    if isinstance(target, str):
        mod, _, attr = target.partition(":")
        try:
            cls = getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as e:
            raise RegistryError(f"method {name!r}: cannot load {target!r} ({type(e).__name__}: {e})") from None
        cls = _check_class(name, cls)
        with _LOCK:
            _REGISTRY[name] = cls
        target = cls
    return target


def method_options(cls: type[Predictor]) -> tuple[str, ...] | None:
    """The option names ``cls`` takes: the named parameters of its ``__init__`` chain (each ``**kwargs``
    passes on to the next class's ``__init__``, ending at :class:`Predictor`, which takes none), or ``None``
    when a class outside that chain swallows ``**kwargs`` (then any option may be valid)."""
    names: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        if klass is Predictor:
            return tuple(n for n in names if n != "device")
        params = list(inspect.signature(init).parameters.values())[1:]
        names += [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return tuple(n for n in names if n != "device")
    return None


def check_options(cls: type[Predictor], options: dict[str, Any], name: str | None = None) -> None:
    """Refuse options ``cls`` does not take, before anything is loaded (``name``: the method's registry name,
    for the message; default the class's).

    Raises:
        MethodOptionError: one line naming the unknown options and the ones the method takes.
    """
    known = method_options(cls)
    unknown = [k for k in options if known is not None and k not in known]
    if unknown:
        takes = ", ".join(known) if known else "none"
        names = ", ".join(map(repr, unknown))
        raise MethodOptionError(f"method {name or cls.name!r} has no option {names} (options: {takes})")


def blind_predictor_class(name: str, options: dict[str, Any], option: str = "--segmenter") -> type[Predictor]:
    """The class of a blind method that is to segment (a judge, a segmenter under test), its options checked.

    Raises:
        UnknownMethodError, RegistryError: see :func:`get_predictor_class`.
        MethodOptionError: an option it does not take, or the method is not blind (``option`` names the
            command-line option in the message).
    """
    cls = get_predictor_class(name)
    check_options(cls, options, name)
    if cls.track != "blind":
        raise MethodOptionError(f"{option} {name}: not a blind method (it does not predict masks)")
    return cls


def create_predictor(name: str, device: str = "cpu", **kwargs: Any) -> Predictor:
    """Instantiate the method ``name`` on ``device`` with options ``kwargs``.

    Options are checked against the method's signature first (:func:`check_options`); a ``TypeError``
    raised inside the method's constructor after that is the method's bug and propagates with its traceback.

    Raises:
        UnknownMethodError, RegistryError: see :func:`get_predictor_class`.
        MethodOptionError: an option the method does not take.
    """
    cls = get_predictor_class(name)
    check_options(cls, kwargs, name)
    predictor = cls(device=device, **kwargs)
    if not predictor.name:
        predictor.name = name  # on the instance: a plug-in's class is left as it is
    return predictor


def list_methods() -> list[str]:
    """All registered method names (built-ins, :func:`register` calls, entry points), sorted."""
    _ensure_loaded()
    with _LOCK:
        return sorted(n for n in _REGISTRY)


def method_info(name: str) -> MethodInfo:
    """Describe ``name`` for listings; a class that fails to load is reported in ``error``, not raised.

    Raises:
        UnknownMethodError: no such name.
    """
    _ensure_loaded()
    source = _SOURCES.get(name, "?")
    try:
        cls = get_predictor_class(name)
    except RegistryError as e:
        return MethodInfo(name, "?", None, False, "?", "", source, str(e))
    card = cls.weights_card() if cls.weights_status() == "available" else None
    return MethodInfo(
        name=name,
        track=cls.track,
        input_size=cls.input_size,
        needs_gpu=cls.needs_gpu,
        weights=cls.weights_status(),
        description=cls.description or ((cls.__doc__ or "").strip().splitlines() or [""])[0],
        source=source,
        trainable=cls.trainer is not None,
        training=training_budget(card) if card else "",
    )


def training_budget(card: dict[str, Any]) -> str:
    """A weights card's training budget in words: ``"128 px, 1200 steps, 9.6k images, cpu, 0.4 h"``."""
    n = card.get("images_seen", 0)
    images = f"{n / 1000:.1f}k" if n >= 1000 else str(n)
    hours = card.get("wall_time_s", 0) / 3600
    return f"{card.get('size', '?')} px, {card.get('steps', '?')} steps, {images} images, {card.get('device', '?')}, {hours:.1f} h"


def parse_method_args(pairs: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["radius=5", "weights=w.safetensors"]`` -> ``{"radius": 5, "weights": "w.safetensors"}``; values
    are parsed as YAML scalars (numbers, booleans, strings).

    Raises:
        ValueError: an item without ``=``, or an empty key.
    """
    import yaml

    out: dict[str, Any] = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise MethodOptionError(f"method options must be key=value, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def batch_generator(seed: int, sample_ids: list[str] | tuple[str, ...]):
    """The CPU ``torch.Generator`` a batch's ``predict`` draws noise from, seeded by SHA-256 of the run's
    seed and the batch's sample ids: independent of worker threads, batch order and other batches."""
    import torch

    h = hashlib.sha256(f"{seed}|{'|'.join(map(str, sample_ids))}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(h[:8], "big") >> 1)


@functools.lru_cache(maxsize=None)
def _accepts_generator(cls: type) -> bool:
    try:
        params = inspect.signature(cls.predict).parameters
    except (TypeError, ValueError):
        return False
    return "generator" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def resolve_device(device: str) -> str:
    """Map ``"auto"`` to ``"cuda"`` when available else ``"cpu"``; check ``"cpu"``/``"cuda"``/``"cuda:N"``.

    Raises:
        ValueError: unknown device string, or ``cuda`` asked for where none is available.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available (use --device cpu or auto)")
        return device
    raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")


def _check_inputs(name: str, track: str, images: np.ndarray, masks: np.ndarray | None) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise PredictorInputError(
            f"method {name!r}: images must be (N, H, W, 3) uint8, got {getattr(images, 'shape', type(images))} "
            f"{getattr(images, 'dtype', '')}"
        )
    if track == "given-mask":
        if masks is None:
            raise PredictorInputError(f"method {name!r} is on the given-mask track: masks are required")
        if masks.dtype != np.bool_ or masks.shape != images.shape[:3]:
            raise PredictorInputError(
                f"method {name!r}: masks must be {images.shape[:3]} bool, got {masks.shape} {masks.dtype}"
            )


def _check_outputs(name: str, track: str, out: Any, shape: tuple[int, ...]) -> PredictorOutput:
    if not isinstance(out, PredictorOutput):
        raise PredictorOutputError(f"method {name!r}: predict must return PredictorOutput, got {type(out).__name__}")
    im = out.images
    if not isinstance(im, np.ndarray) or im.dtype != np.uint8 or im.shape != shape:
        raise PredictorOutputError(
            f"method {name!r}: expected images of shape {shape} uint8, got "
            f"{getattr(im, 'shape', type(im).__name__)} {getattr(im, 'dtype', '')}"
        )
    if track == "blind":
        m = out.masks
        if not isinstance(m, np.ndarray) or m.dtype != np.bool_ or m.shape != shape[:3]:
            raise PredictorOutputError(
                f"method {name!r}: blind track must return masks of shape {shape[:3]} bool, got "
                f"{getattr(m, 'shape', type(m).__name__)} {getattr(m, 'dtype', '')}"
            )
    lm = out.landmarks
    if lm is not None and (not isinstance(lm, np.ndarray) or lm.shape != (shape[0], 68, 2)):
        raise PredictorOutputError(f"method {name!r}: landmarks must be ({shape[0]}, 68, 2) or None, got "
                                   f"{getattr(lm, 'shape', type(lm).__name__)}")
    return out


def run_predictor(
    predictor: Predictor,
    images: np.ndarray,
    masks: np.ndarray | None,
    *,
    generator=None,
    extras: dict[str, np.ndarray] | None = None,
) -> PredictorOutput:
    """Call ``predictor.predict`` with checked inputs, resizing to its ``input_size`` and back.

    Images are resized with area interpolation (down) or bicubic (up), masks with nearest neighbour;
    outputs are resized back to the input size the same way; point extras (landmarks, boxes) are scaled
    with the image.

    Args:
        predictor: a :class:`Predictor`.
        images: ``(N, H, W, 3) uint8`` RGB masked faces.
        masks: ``(N, H, W) bool`` hole masks, required on the given-mask track (ignored on blind).
        generator: the batch's ``torch.Generator`` (:func:`batch_generator`), passed on to methods whose
            ``predict`` accepts ``generator``; a fresh one seeded 0 when ``None``.
        extras: the record fields the method lists in ``extra_inputs``, each ``(N, ...)``.

    Returns:
        :class:`PredictorOutput` at ``(N, H, W, ...)``; ``masks`` is ``None`` on the given-mask track.

    Raises:
        PredictorInputError: inputs of the wrong shape/dtype, or a declared extra input missing.
        PredictorOutputError: the method returned the wrong type, shape or dtype.
    """
    name = predictor.name or type(predictor).__name__
    track = predictor.track
    _check_inputs(name, track, images, masks)
    n, h, w, _ = images.shape
    s = predictor.input_size
    resize = s is not None and (h, w) != (s, s)
    x_img, x_mask = images, (masks if track == "given-mask" else None)
    if resize:
        x_img = np.stack([_resize(im, s, s) for im in images]) if n else np.zeros((0, s, s, 3), np.uint8)
        if x_mask is not None:
            x_mask = np.stack([_resize_mask(m, s, s) for m in x_mask]) if n else np.zeros((0, s, s), bool)
    kwargs: dict[str, Any] = {}
    for field in predictor.extra_inputs:
        if field not in EXTRA_INPUTS:
            raise PredictorInputError(f"method {name!r} asks for unknown input {field!r} (known: {', '.join(EXTRA_INPUTS)})")
        if extras is None or field not in extras:
            raise PredictorInputError(f"method {name!r} needs the records' {field!r}, which were not given")
        v = np.asarray(extras[field], np.float32)
        if v.shape != (n,) + EXTRA_INPUTS[field]:
            raise PredictorInputError(f"method {name!r}: {field} must be {(n,) + EXTRA_INPUTS[field]}, got {v.shape}")
        if resize:
            v = (v.reshape(n, -1, 2) * np.array([s / w, s / h], np.float32)).reshape(v.shape)
        kwargs[field] = v
    if _accepts_generator(type(predictor)):
        if generator is None:
            import torch

            generator = torch.Generator().manual_seed(0)
        kwargs["generator"] = generator
    out = _check_outputs(name, track, predictor.predict(x_img, x_mask, **kwargs), x_img.shape)
    if track == "given-mask":
        out = PredictorOutput(out.images, None, out.landmarks)
    if resize:
        ims = np.stack([_resize(im, w, h) for im in out.images]) if n else images.copy()
        ms = None if out.masks is None else np.stack([_resize_mask(m, w, h) for m in out.masks])
        lm = None if out.landmarks is None else out.landmarks * np.array([w / s, h / s], np.float32)
        out = PredictorOutput(ims, ms, lm)
    return out


def _resize(im: np.ndarray, w: int, h: int) -> np.ndarray:
    interp = cv2.INTER_AREA if w < im.shape[1] else cv2.INTER_CUBIC
    return cv2.resize(im, (w, h), interpolation=interp)


def _resize_mask(m: np.ndarray, w: int, h: int) -> np.ndarray:
    return cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
