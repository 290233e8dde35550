"""Hand gestures -> live controls: MIDI CCs for the synth, and steering for the generation.

The mapping and the gesture classification are pure functions of *hand landmarks*: the 21
points MediaPipe's Hand Landmarker finds on a hand (wrist, then four joints per finger from the
thumb to the little finger), with ``x`` and ``y`` normalised to the image (0-1, ``y`` pointing
down) and ``z`` the depth relative to the wrist on about the scale of ``x``, plus the hand's
handedness label ("Left"/"Right"). So they are tested on recorded or constructed landmark sets,
without a camera.

What a hand does (:class:`GestureMapping` holds every number):

* the original mapping, for the synthesizer: index-finger ``x`` -> CC 74 (filter cut-off),
  hand height -> CC 91 (reverb), thumb-index pinch -> CC 71 (resonance); and four poses recall
  presets of CC 93 (chorus) and CC 1 (modulation): open palm, fist, peace sign, rock-on;
* what the original never did, steer the music: the lead hand's height sets the sampling
  temperature (higher hand, wilder music), the other hand's height sets the speed, and a fist
  held by either hand pauses the performance (open it to go on).

Values are smoothed (exponential moving average), each CC is sent at most ``max_rate_hz`` times
a second (the latest value wins: a value held back is sent once the interval has passed), and
changes smaller than a dead-band are not sent at all.

The camera loop (:func:`run_camera`, :func:`start_camera_thread`) needs the optional extra
``pip install .[gestures]`` (OpenCV and MediaPipe); it downloads MediaPipe's
``hand_landmarker.task`` model into ``data/models/`` on first use and checks its SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .errors import MusicRNNError

# -- landmarks ------------------------------------------------------------------------------------

LANDMARK_NAMES: tuple[str, ...] = (
    "wrist",
    "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip",
    "index_mcp", "index_pip", "index_dip", "index_tip",
    "middle_mcp", "middle_pip", "middle_dip", "middle_tip",
    "ring_mcp", "ring_pip", "ring_dip", "ring_tip",
    "pinky_mcp", "pinky_pip", "pinky_dip", "pinky_tip",
)
"""MediaPipe's 21 hand landmarks, in its order."""

WRIST, THUMB_IP, THUMB_TIP = 0, 3, 4
INDEX_MCP, INDEX_PIP, INDEX_TIP = 5, 6, 8
MIDDLE_MCP = 9
PINKY_MCP = 17
FINGERS: dict[str, tuple[int, int, int, int]] = {
    "thumb": (1, 2, 3, 4),
    "index": (5, 6, 7, 8),
    "middle": (9, 10, 11, 12),
    "ring": (13, 14, 15, 16),
    "pinky": (17, 18, 19, 20),
}
"""Each finger's landmark indices, from its base joint to its tip."""

GESTURES: tuple[str, ...] = ("open_palm", "fist", "peace", "rock_on", "pinch")


@dataclass(frozen=True)
class Hand:
    """One detected hand: 21 landmarks ``(21, 3)`` and its handedness label."""

    landmarks: np.ndarray  # (21, 3): x, y in 0-1 of the image (y down), z relative depth
    handedness: str = "Right"  # "Left" or "Right", as MediaPipe labels it
    score: float = 1.0  # the detector's confidence in the handedness
    aspect: float = 1.0  # image width / height: x (and z) are fractions of the width, y of the
    #                      height, so lengths are measured on (x * aspect, y, z * aspect)

    def __post_init__(self) -> None:
        points = np.asarray(self.landmarks, dtype=np.float64)
        if points.shape != (21, 3) or not np.all(np.isfinite(points)):
            raise MusicRNNError(f"a hand needs 21 finite (x, y, z) landmarks, got {points.shape}")
        if self.handedness not in ("Left", "Right"):
            raise MusicRNNError(f"handedness must be 'Left' or 'Right', got {self.handedness!r}")
        if not self.aspect > 0:
            raise MusicRNNError(f"aspect (image width / height) must be > 0, got {self.aspect}")
        object.__setattr__(self, "landmarks", points)

    @property
    def points(self) -> np.ndarray:
        """The landmarks in one unit on every axis (x and z scaled by the aspect ratio)."""
        return self.landmarks * np.array([self.aspect, 1.0, self.aspect])

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Hand":
        """From ``{"landmarks": [[x, y, z] * 21], "handedness": "Right", "score": 0.98,
        "aspect": 1.333}``."""
        return cls(np.asarray(d["landmarks"], dtype=np.float64), d.get("handedness", "Right"),
                   float(d.get("score", 1.0)), float(d.get("aspect", 1.0)))

    def to_dict(self) -> dict[str, Any]:
        return {"handedness": self.handedness, "score": self.score, "aspect": self.aspect,
                "landmarks": [[round(float(v), 5) for v in p] for p in self.landmarks]}


def load_hands(path: str | os.PathLike) -> list[Hand]:
    """Hands from a JSON file: one hand object, a list of them, or ``{"hands": [...]}``."""
    data = json.loads(Path(path).read_text())
    if isinstance(data, dict) and "hands" in data:
        data = data["hands"]
    if isinstance(data, dict):
        data = [data]
    return [Hand.from_dict(d) for d in data]


def _dist(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b))


def palm_size(hand: Hand) -> float:
    """Wrist to middle-finger base: the hand's own unit of length (scale- and distance-free)."""
    p = hand.points
    return max(_dist(p[WRIST], p[MIDDLE_MCP]), 1e-6)


def finger_extended(hand: Hand) -> dict[str, bool]:
    """Which fingers are stretched out, judged in the hand's own geometry.

    A finger (index to little) is extended when its tip is clearly farther from the wrist
    than its middle joint (PIP); curled into the palm, the tip comes back nearer than it. The
    thumb is extended when its tip stands away from the index finger's base and farther from
    the little finger's base than its own last joint (tucked across the palm, it is neither).
    Rotation, mirroring, hand size and distance to the camera do not matter.
    """
    p = hand.points
    out = {}
    for name, (_mcp, pip, _dip, tip) in FINGERS.items():
        if name == "thumb":
            continue
        out[name] = _dist(p[WRIST], p[tip]) > 1.15 * _dist(p[WRIST], p[pip])
    size = palm_size(hand)
    out["thumb"] = (
        _dist(p[THUMB_TIP], p[INDEX_MCP]) > 0.55 * size
        and _dist(p[THUMB_TIP], p[PINKY_MCP]) > _dist(p[THUMB_IP], p[PINKY_MCP])
    )
    return {name: out[name] for name in FINGERS}


def pinch_distance(hand: Hand) -> float:
    """Thumb tip to index tip, in palm sizes (about 0.1 when pinched, 1+ when spread)."""
    p = hand.points
    return _dist(p[THUMB_TIP], p[INDEX_TIP]) / palm_size(hand)


PINCH_THRESHOLD = 0.3
"""Below this :func:`pinch_distance` the thumb and index finger touch."""


def classify_gesture(hand: Hand) -> str | None:
    """``"fist"``, ``"pinch"``, ``"open_palm"``, ``"peace"``, ``"rock_on"`` or None.

    Checked in that order: a fist (no finger extended; the thumb may be out, as in a thumbs-up),
    a pinch (thumb and index tips together), an open palm (all four fingers out), the peace
    sign (index and middle only) and rock-on (index and little finger only; thumb free).
    """
    ext = finger_extended(hand)
    index, middle, ring, pinky = ext["index"], ext["middle"], ext["ring"], ext["pinky"]
    if not (index or middle or ring or pinky):
        return "fist"
    if pinch_distance(hand) < PINCH_THRESHOLD:
        return "pinch"
    if index and middle and ring and pinky:
        return "open_palm"
    if index and middle and not ring and not pinky:
        return "peace"
    if index and pinky and not middle and not ring:
        return "rock_on"
    return None


def hand_height(hand: Hand) -> float:
    """How high the palm is in the image: 0 at the bottom edge, 1 at the top."""
    palm = hand.landmarks[[WRIST, INDEX_MCP, MIDDLE_MCP, 13, PINKY_MCP], 1].mean()
    return float(np.clip(1.0 - palm, 0.0, 1.0))


def index_x(hand: Hand) -> float:
    """The index fingertip's x position, 0 (left of the image) to 1 (right)."""
    return float(np.clip(hand.landmarks[INDEX_TIP, 0], 0.0, 1.0))


def pinch_amount(hand: Hand, closed: float = 0.15, open_: float = 1.2) -> float:
    """The pinch as 0 (thumb and index touching) to 1 (spread), from :func:`pinch_distance`."""
    return float(np.clip((pinch_distance(hand) - closed) / (open_ - closed), 0.0, 1.0))


# -- smoothing, rate limiting, dead-band -----------------------------------------------------------


class Smoother:
    """Exponential moving averages, one per key: ``y += alpha * (x - y)``; the first x passes."""

    def __init__(self, alpha: float) -> None:
        if not 0.0 < alpha <= 1.0:
            raise MusicRNNError(f"smoothing alpha must be in (0, 1], got {alpha}")
        self.alpha = float(alpha)
        self.values: dict[str, float] = {}

    def __call__(self, key: str, value: float) -> float:
        previous = self.values.get(key)
        smoothed = value if previous is None else previous + self.alpha * (value - previous)
        self.values[key] = smoothed
        return smoothed

    def reset(self, prefix: str = "") -> None:
        for key in [k for k in self.values if k.startswith(prefix)]:
            del self.values[key]


class RateLimiter:
    """At most ``max_rate_hz`` sends per key, with a dead-band; the latest value wins.

    :meth:`offer` returns the value to send now, or None: within the dead-band of the last value
    sent (dropped), or too soon after the last send (held back). :meth:`due` returns the held
    values whose interval has passed. ``clock`` is injectable for tests.
    """

    def __init__(self, max_rate_hz: float = 20.0, clock: Callable[[], float] = time.monotonic):
        if not max_rate_hz > 0:
            raise MusicRNNError(f"max_rate_hz must be > 0, got {max_rate_hz}")
        self.min_interval = 1.0 / max_rate_hz
        self.clock = clock
        self._sent: dict[Any, tuple[float, float]] = {}  # key -> (time, value)
        self._held: dict[Any, tuple[float, float]] = {}  # key -> (value, dead_band)

    def offer(self, key: Any, value: float, dead_band: float = 0.0,
              now: float | None = None) -> float | None:
        now = self.clock() if now is None else now
        last = self._sent.get(key)
        if last is not None and abs(value - last[1]) < dead_band:
            self._held.pop(key, None)  # back near what was sent: nothing to send
            return None
        if last is None or now - last[0] >= self.min_interval - 1e-9:
            self._sent[key] = (now, value)
            self._held.pop(key, None)
            return value
        self._held[key] = (value, dead_band)
        return None

    def due(self, now: float | None = None) -> list[tuple[Any, float]]:
        now = self.clock() if now is None else now
        ready = []
        for key, (value, _band) in list(self._held.items()):
            if now - self._sent[key][0] >= self.min_interval - 1e-9:
                self._sent[key] = (now, value)
                del self._held[key]
                ready.append((key, value))
        return ready

    def last_sent(self, key: Any) -> float | None:
        return self._sent[key][1] if key in self._sent else None


# -- the mapping ---------------------------------------------------------------------------------


def _default_presets() -> dict[str, dict[int, int]]:
    return {
        "open_palm": {93: 0, 1: 0},  # dry: no chorus, no vibrato
        "fist": {93: 0, 1: 0},  # (and the fist pauses the music)
        "peace": {93: 80, 1: 20},  # chorus, a little vibrato
        "rock_on": {93: 127, 1: 100},  # full chorus, strong vibrato
    }


@dataclass
class GestureMapping:
    """Every number of the gesture mapping (the defaults reproduce the original's CCs)."""

    filter_cc: int = 74  # index-finger x -> this CC (74: brightness / filter cut-off)
    reverb_cc: int = 91  # hand height -> this CC (91: reverb send)
    resonance_cc: int = 71  # thumb-index pinch -> this CC (71: resonance)
    presets: dict[str, dict[int, int]] = field(default_factory=_default_presets)  # pose -> CCs
    lead_hand: str = "Right"  # with two hands, this one plays the CCs and the temperature
    temperature_range: tuple[float, float] = (0.3, 1.8)  # lead hand bottom -> top of the image
    speed_range: tuple[float, float] = (0.5, 2.0)  # other hand bottom -> top (geometric)
    fist_pauses: bool = True  # a fist held by either hand pauses the performance
    smoothing: float = 0.35  # EMA weight of each new frame (1: no smoothing)
    max_rate_hz: float = 20.0  # at most this many messages per second per CC / control
    dead_band_cc: int = 2  # CC changes smaller than this are not sent
    dead_band_control: float = 0.03  # relative temperature / speed changes smaller than this
    hold_frames: int = 3  # frames a pose must be seen in a row before it counts

    def __post_init__(self) -> None:
        if self.lead_hand not in ("Left", "Right"):
            raise MusicRNNError(f"lead_hand must be 'Left' or 'Right', got {self.lead_hand!r}")
        for cc in (self.filter_cc, self.reverb_cc, self.resonance_cc):
            if not 0 <= cc <= 127:
                raise MusicRNNError(f"CC numbers are 0-127, got {cc}")
        lo, hi = self.speed_range
        if not 0 < lo <= hi:
            raise MusicRNNError(f"speed_range must be 0 < lo <= hi, got {self.speed_range}")
        if not 0 < self.temperature_range[0] <= self.temperature_range[1]:
            raise MusicRNNError(f"temperature_range must be positive, got {self.temperature_range}")
        if self.hold_frames < 1:
            raise MusicRNNError("hold_frames must be >= 1")


@dataclass
class GestureUpdate:
    """What one camera frame asks for."""

    ccs: list[tuple[int, int]] = field(default_factory=list)  # (control, value) to send
    controls: dict[str, Any] = field(default_factory=dict)  # LiveControls changes
    gestures: dict[str, str | None] = field(default_factory=dict)  # role -> stable pose

    def apply(self, controls: Any) -> None:
        """Hand the CCs and control changes to a :class:`musicrnn.live.LiveControls`."""
        if self.controls:
            controls.set(**self.controls)
        for control, value in self.ccs:
            controls.send_cc(control, value)


class GestureController:
    """Turn a stream of detected hands (one list per camera frame) into control updates.

    Stateful: it smooths, debounces poses over ``hold_frames`` frames, rate-limits and
    dead-bands. ``clock`` (seconds) is injectable for tests.
    """

    def __init__(self, mapping: GestureMapping | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.mapping = mapping or GestureMapping()
        self.clock = clock
        self.smoother = Smoother(self.mapping.smoothing)
        self.limiter = RateLimiter(self.mapping.max_rate_hz, clock)
        self._candidate: dict[str, tuple[str | None, int]] = {}  # role -> (pose, frames seen)
        self._stable: dict[str, str | None] = {"lead": None, "other": None}
        self._paused: bool | None = None

    def roles(self, hands: Sequence[Hand]) -> dict[str, Hand]:
        """Which hand leads: the only hand, or the one labelled ``mapping.lead_hand``."""
        if not hands:
            return {}
        if len(hands) == 1:
            return {"lead": hands[0]}
        ordered = sorted(hands[:2], key=lambda h: h.handedness != self.mapping.lead_hand)
        return {"lead": ordered[0], "other": ordered[1]}

    def _stable_pose(self, role: str, pose: str | None) -> tuple[str | None, bool]:
        """Debounce: (the stable pose of ``role``, whether it just changed)."""
        seen, count = self._candidate.get(role, (None, 0))
        count = count + 1 if pose == seen else 1
        self._candidate[role] = (pose, count)
        if count >= self.mapping.hold_frames and self._stable.get(role) != pose:
            self._stable[role] = pose
            return pose, True
        return self._stable.get(role), False

    def _cc(self, update: GestureUpdate, cc: int, value: float, now: float) -> None:
        sent = self.limiter.offer(("cc", cc), float(value), self.mapping.dead_band_cc, now)
        if sent is not None:
            update.ccs.append((cc, int(round(sent))))

    def _control(self, update: GestureUpdate, name: str, value: float, now: float) -> None:
        last = self.limiter.last_sent(("control", name))
        band = self.mapping.dead_band_control * abs(last) if last is not None else 0.0
        sent = self.limiter.offer(("control", name), float(value), band, now)
        if sent is not None:
            update.controls[name] = round(sent, 4)

    def update(self, hands: Sequence[Hand], now: float | None = None) -> GestureUpdate:
        """The CCs and control changes for this frame's ``hands`` (possibly none)."""
        m = self.mapping
        now = self.clock() if now is None else now
        update = GestureUpdate()
        for (kind, key), value in self.limiter.due(now):  # values held back earlier
            if kind == "cc":
                update.ccs.append((key, int(round(value))))
            else:
                update.controls[key] = round(value, 4)
        roles = self.roles(hands)
        for role in ("lead", "other"):
            if role not in roles:
                self.smoother.reset(role + ".")
                self._stable_pose(role, None)
        for role, hand in roles.items():
            pose, changed = self._stable_pose(role, classify_gesture(hand))
            update.gestures[role] = pose
            if role == "lead":
                x = self.smoother("lead.x", index_x(hand))
                height = self.smoother("lead.height", hand_height(hand))
                pinch = self.smoother("lead.pinch", pinch_amount(hand))
                self._cc(update, m.filter_cc, 127 * x, now)
                self._cc(update, m.reverb_cc, 127 * height, now)
                self._cc(update, m.resonance_cc, 127 * pinch, now)
                lo, hi = m.temperature_range
                self._control(update, "temperature", lo + (hi - lo) * height, now)
                if changed and pose in m.presets:
                    for cc, value in m.presets[pose].items():
                        sent = self.limiter.offer(("cc", cc), float(value), 0.0, now)
                        if sent is not None:
                            update.ccs.append((cc, int(value)))
            else:
                height = self.smoother("other.height", hand_height(hand))
                lo, hi = m.speed_range
                self._control(update, "speed", lo * (hi / lo) ** height, now)
        for role in ("lead", "other"):
            update.gestures.setdefault(role, self._stable.get(role))
        if m.fist_pauses:
            paused = any(self._stable.get(role) == "fist" for role in ("lead", "other"))
            if paused != self._paused and (self._paused is not None or paused):
                update.controls["paused"] = paused
            self._paused = paused
        return update


def hands_from_result(result: Any, aspect: float = 1.0) -> list[Hand]:
    """Hands from a MediaPipe ``HandLandmarkerResult`` (``hand_landmarks``, ``handedness``);
    ``aspect`` is the frame's width / height."""
    hands = []
    for points, categories in zip(result.hand_landmarks, result.handedness):
        best = max(categories, key=lambda c: c.score or 0.0)
        label = best.category_name or best.display_name or "Right"
        hands.append(Hand(np.array([[p.x, p.y, p.z or 0.0] for p in points], dtype=np.float64),
                          label if label in ("Left", "Right") else "Right",
                          float(best.score or 0.0), aspect))
    return hands


# -- the model file --------------------------------------------------------------------------------

HAND_MODEL_URL = ("https://storage.googleapis.com/mediapipe-models/hand_landmarker/"
                  "hand_landmarker/float16/1/hand_landmarker.task")
"""MediaPipe's official Hand Landmarker model bundle (float16, version 1)."""
HAND_MODEL_SHA256 = "fbc2a30080c3c557093b5ddfc334698132eb341044ccee322ccf8bcf3607cde1"


def hand_model_path(data_dir: str | os.PathLike | None = None) -> Path:
    """Where the model lives: ``<data>/models/hand_landmarker.task``."""
    from .paths import data_dir as resolve

    return resolve(data_dir) / "models" / "hand_landmarker.task"


def ensure_hand_model(data_dir: str | os.PathLike | None = None, *, url: str = HAND_MODEL_URL,
                      sha256: str = HAND_MODEL_SHA256, timeout_s: float = 30.0,
                      path: str | os.PathLike | None = None) -> Path:
    """The Hand Landmarker model file, downloaded on first use and checked by SHA-256.

    A file already there with the right checksum is used as is; a damaged one is replaced. The
    download goes to a temporary file beside the target and is renamed only once its checksum
    matches, so a failed or corrupt download never leaves a file that looks right. Offline, a
    clear :class:`MusicRNNError` says where to put a copy fetched elsewhere.
    """
    target = Path(path) if path is not None else hand_model_path(data_dir)
    from .datasets import file_sha256

    if target.is_file() and file_sha256(target) == sha256:
        return target
    from .paths import atomic_path

    manual = (f"download {url} on a machine with internet access and copy it to {target} "
              f"(SHA-256 {sha256})")
    try:
        with atomic_path(target) as tmp:
            digest = hashlib.sha256()
            with urllib.request.urlopen(url, timeout=timeout_s) as response, open(tmp, "wb") as out:
                for block in iter(lambda: response.read(1 << 16), b""):
                    digest.update(block)
                    out.write(block)
            got = digest.hexdigest()
            if got != sha256:
                raise MusicRNNError(
                    f"the hand landmark model from {url} has SHA-256 {got}, expected {sha256}: "
                    f"the download is damaged or the file changed upstream; nothing was saved. "
                    f"Try again, or {manual}"
                )
    except MusicRNNError:
        raise
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MusicRNNError(
            f"could not download the hand landmark model ({reason}); are you offline? To use "
            f"gestures, {manual}"
        ) from exc
    return target


# -- the camera loop (optional extra) --------------------------------------------------------------


def require_extra() -> tuple[Any, Any]:
    """Import OpenCV and MediaPipe, or say how to install them."""
    try:
        import cv2
        import mediapipe
    except ImportError as exc:
        raise MusicRNNError(
            f"gesture control needs OpenCV and MediaPipe ({exc.name or exc} is missing): install "
            "the optional extra with `pip install .[gestures]` (or `pip install "
            "'musicrnn[gestures]'`) and try again"
        ) from exc
    return cv2, mediapipe


class CameraLoop:
    """Read the camera, detect hands, drive the controls; on a thread or in the caller's.

    Opening the camera and the model happens in the constructor, so errors (no extra, no
    camera, no model) surface before a performance starts.
    """

    def __init__(self, controls: Any, *, camera: int | str = 0,
                 data_dir: str | os.PathLike | None = None,
                 model_path: str | os.PathLike | None = None,
                 mapping: GestureMapping | None = None, mirror: bool = True,
                 on_frame: Callable[[Any, list[Hand], GestureUpdate], None] | None = None) -> None:
        self.cv2, mp = require_extra()
        model = Path(model_path) if model_path else ensure_hand_model(data_dir)
        self.controls = controls
        self.controller = GestureController(mapping)
        self.mirror = mirror  # selfie view: the hand moving right moves right on screen
        self.on_frame = on_frame
        vision = mp.tasks.vision
        options = vision.HandLandmarkerOptions(
            base_options=mp.tasks.BaseOptions(model_asset_path=str(model)),
            running_mode=vision.RunningMode.VIDEO, num_hands=2,
        )
        self._mp = mp
        try:
            self.landmarker = vision.HandLandmarker.create_from_options(options)
        except (RuntimeError, ValueError) as exc:
            raise MusicRNNError(f"MediaPipe could not load the hand model {model} ({exc}); "
                                "delete the file to download it again") from exc
        self.capture = self.cv2.VideoCapture(camera)
        if not self.capture.isOpened():
            self.landmarker.close()
            raise MusicRNNError(f"could not open camera {camera!r}; check that one is connected "
                                "and not in use, or pick another with --camera N")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.frames = 0

    def run(self, max_frames: int | None = None) -> None:
        """Process frames until :meth:`stop` (or ``max_frames``, or the camera ends)."""
        started = time.monotonic()
        last_ms = -1
        try:
            while not self._stop.is_set() and (max_frames is None or self.frames < max_frames):
                ok, frame = self.capture.read()
                if not ok:
                    break
                if self.mirror:
                    frame = self.cv2.flip(frame, 1)
                rgb = self.cv2.cvtColor(frame, self.cv2.COLOR_BGR2RGB)
                image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=rgb)
                stamp = max(int((time.monotonic() - started) * 1000), last_ms + 1)
                last_ms = stamp
                aspect = frame.shape[1] / frame.shape[0]
                hands = hands_from_result(self.landmarker.detect_for_video(image, stamp), aspect)
                update = self.controller.update(hands)
                update.apply(self.controls)
                self.frames += 1
                if self.on_frame is not None:
                    self.on_frame(frame, hands, update)
        except BaseException as exc:  # noqa: BLE001 - kept for the caller
            self.error = exc
            raise
        finally:
            self.close()

    def start(self) -> "CameraLoop":
        self._thread = threading.Thread(target=self._run_quietly, name="musicrnn-camera",
                                        daemon=True)
        self._thread.start()
        return self

    def _run_quietly(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # noqa: BLE001 - kept in self.error, and said once
            print(f"musicrnn: gesture control stopped: {exc}", file=sys.stderr)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)

    def close(self) -> None:
        try:
            self.landmarker.close()
        except Exception:  # noqa: BLE001 - closing twice is harmless
            pass
        self.capture.release()


def start_camera_thread(controls: Any, *, camera: int | str = 0,
                        data_dir: str | os.PathLike | None = None,
                        mapping: GestureMapping | None = None) -> CameraLoop:
    """Open the camera and the model, then follow the hands on a background thread."""
    return CameraLoop(controls, camera=camera, data_dir=data_dir, mapping=mapping).start()


def run_camera(controls: Any, *, camera: int | str = 0, data_dir: str | os.PathLike | None = None,
               mapping: GestureMapping | None = None, max_frames: int | None = None) -> None:
    """Follow the hands in the calling thread until interrupted (or ``max_frames``)."""
    CameraLoop(controls, camera=camera, data_dir=data_dir, mapping=mapping).run(max_frames)
