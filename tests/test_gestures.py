"""Gestures: classification on constructed landmark sets, the mapping, smoothing, rate limits,
the model download (against a loopback HTTP server) and the optional extra's message.

``fixtures/hand_poses.json`` holds MediaPipe-style landmarks of five poses (and a three-finger
pose that is none of them), each as right and left hands, turned, scaled and placed in a
640 x 480 frame with pixel noise; ``fixtures/make_hand_poses.py`` says how they were built.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import socket
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from musicrnn.errors import MusicRNNError
from musicrnn.gestures import (
    GestureController,
    GestureMapping,
    Hand,
    RateLimiter,
    Smoother,
    classify_gesture,
    ensure_hand_model,
    finger_extended,
    hand_height,
    hand_model_path,
    hands_from_result,
    index_x,
    load_hands,
    pinch_amount,
    require_extra,
)
from musicrnn.live import LiveControls

FIXTURES = Path(__file__).parent / "fixtures"
POSES = json.loads((FIXTURES / "hand_poses.json").read_text())["hands"]


def pose(name: str, handedness: str = "Right", variant: int = 0) -> Hand:
    found = [h for h in POSES if h["pose"] == name and h["handedness"] == handedness]
    return Hand.from_dict(found[variant])


def moved(hand: Hand, dx: float = 0.0, dy: float = 0.0) -> Hand:
    """The same hand shifted in the image (a hand moving without changing its pose)."""
    return Hand(hand.landmarks + np.array([dx, dy, 0.0]), hand.handedness, hand.score,
                hand.aspect)


class FakeClock:
    """An injectable clock: time moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- classification ------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", POSES, ids=lambda e: e["variant"])
def test_each_constructed_pose_is_recognised(entry):
    assert classify_gesture(Hand.from_dict(entry)) == entry["pose"]


def test_fixture_file_loads_as_hands_and_fingers_read_as_expected():
    hands = load_hands(FIXTURES / "hand_poses.json")
    assert len(hands) == len(POSES) and {h.handedness for h in hands} == {"Left", "Right"}
    assert all(finger_extended(pose("open_palm", side)).values() for side in ("Left", "Right"))
    assert not any(finger_extended(pose("fist", "Left", 1)).values())
    peace = finger_extended(pose("peace"))
    assert peace["index"] and peace["middle"] and not peace["ring"] and not peace["pinky"]


def test_a_hand_needs_21_landmarks():
    with pytest.raises(MusicRNNError, match="21"):
        Hand(np.zeros((20, 3)))
    with pytest.raises(MusicRNNError, match="handedness"):
        Hand(np.zeros((21, 3)), handedness="Both")


# -- the mapping -----------------------------------------------------------------------------------


def test_the_original_cc_mapping():
    controller = GestureController(GestureMapping(hold_frames=1), clock=FakeClock())
    hand = pose("open_palm")
    update = controller.update([hand])
    ccs = dict(update.ccs)
    assert ccs[74] == round(127 * index_x(hand))  # index finger x -> filter
    assert ccs[91] == round(127 * hand_height(hand))  # height -> reverb
    assert ccs[71] == round(127 * pinch_amount(hand))  # thumb-index pinch -> resonance
    assert ccs[71] > 100  # spread: open
    assert ccs[93] == 0 and ccs[1] == 0  # the open-palm preset
    pinch = GestureController(GestureMapping(hold_frames=1)).update([pose("pinch")])
    assert dict(pinch.ccs)[71] < 15  # pinched: closed


def test_moving_the_hand_moves_the_ccs_the_right_way():
    clock = FakeClock()
    controller = GestureController(GestureMapping(smoothing=1.0), clock=clock)
    hand = pose("open_palm")
    first = dict(controller.update([hand]).ccs)
    clock.now += 0.1
    second = dict(controller.update([moved(hand, dx=0.2, dy=-0.2)]).ccs)  # right and up
    assert second[74] > first[74] and second[91] > first[91]


def test_poses_recall_their_presets_once_after_being_held():
    controller = GestureController(GestureMapping(hold_frames=3), clock=FakeClock())
    peace = pose("peace")
    sent = []
    for _ in range(6):
        controller.clock.now += 0.1
        sent.append(dict(controller.update([peace]).ccs))
    assert all(93 not in s for s in sent[:2])  # not yet held long enough
    assert sent[2][93] == 80 and sent[2][1] == 20  # the peace preset
    assert all(93 not in s for s in sent[3:])  # once
    controller.clock.now += 0.1
    for _ in range(3):
        controller.clock.now += 0.1
        last = dict(controller.update([pose("rock_on")]).ccs)
    assert last[93] == 127 and last[1] == 100


def test_gestures_steer_the_generation():
    controls = LiveControls()
    clock = FakeClock()
    mapping = GestureMapping(hold_frames=2, smoothing=1.0)
    controller = GestureController(mapping, clock=clock)
    lead, other = pose("open_palm", "Right"), pose("open_palm", "Left")

    def frame(*hands):
        clock.now += 0.1
        update = controller.update(list(hands))
        update.apply(controls)
        return update

    # The lead (right) hand's height sets the temperature; the other hand's sets the speed.
    frame(moved(lead, dy=0.3), moved(other, dy=0.3))  # both low
    low = controls.snapshot()
    frame(moved(lead, dy=-0.3), moved(other, dy=-0.3))  # both high
    high = controls.snapshot()
    assert high.temperature > low.temperature and high.speed > low.speed
    lo_t, hi_t = mapping.temperature_range
    assert lo_t <= low.temperature < high.temperature <= hi_t
    assert high.temperature == pytest.approx(lo_t + (hi_t - lo_t) * hand_height(
        moved(lead, dy=-0.3)), abs=1e-3)
    # A fist (on either hand) pauses once held; opening it resumes.
    frame(lead, pose("fist", "Left"))
    assert not controls.snapshot().paused  # one frame is not enough
    frame(lead, pose("fist", "Left"))
    assert controls.snapshot().paused
    frame(lead, other)
    frame(lead, other)
    assert not controls.snapshot().paused


def test_with_one_hand_it_leads_whatever_its_label():
    controller = GestureController(GestureMapping(lead_hand="Right"), clock=FakeClock())
    update = controller.update([pose("open_palm", "Left")])
    assert "temperature" in update.controls and 74 in dict(update.ccs)
    assert "speed" not in update.controls


def test_smoothing_follows_a_jump_gradually():
    smoother = Smoother(alpha=0.5)
    values = [smoother("x", v) for v in (0.0, 1.0, 1.0, 1.0, 1.0)]
    assert values == [0.0, 0.5, 0.75, 0.875, 0.9375]
    clock = FakeClock()
    controller = GestureController(GestureMapping(smoothing=0.3), clock=clock)
    hand = pose("open_palm")
    sent = [dict(controller.update([hand]).ccs)[74]]
    for _ in range(12):
        clock.now += 0.1
        sent.append(dict(controller.update([moved(hand, dx=0.3)]).ccs).get(74, sent[-1]))
    assert all(b >= a for a, b in zip(sent, sent[1:]))  # monotone, no overshoot
    assert sent[1] - sent[0] < 0.5 * (sent[-1] - sent[0])  # gradual
    assert sent[-1] == pytest.approx(round(127 * index_x(moved(hand, dx=0.3))), abs=3)


def test_each_cc_is_sent_at_most_20_times_a_second_and_the_last_value_arrives():
    clock = FakeClock()
    controller = GestureController(GestureMapping(smoothing=1.0, max_rate_hz=20.0), clock=clock)
    hand = pose("open_palm")
    stamps: dict[int, list[float]] = {}
    last_sent: dict[int, int] = {}
    for frame in range(200):  # a 100 Hz camera sweeping the hand for two seconds
        clock.now += 0.01
        update = controller.update([moved(hand, dx=0.3 * np.sin(frame / 15),
                                          dy=0.2 * np.cos(frame / 20))])
        for cc, value in update.ccs:
            stamps.setdefault(cc, []).append(clock.now)
            last_sent[cc] = value
    for cc in (74, 91):
        gaps = np.diff(stamps[cc])
        assert gaps.min() >= 0.05 - 1e-9, cc  # never faster than 20 Hz
        assert len(stamps[cc]) <= 41 and len(stamps[cc]) > 20  # and not much slower
    # The hand stops: the value held back is delivered at the next frame after the interval.
    final = moved(hand, dx=0.25)
    for _ in range(10):
        clock.now += 0.01
        for cc, value in controller.update([final]).ccs:
            last_sent[cc] = value
    assert last_sent[74] == round(127 * index_x(final))


def test_a_dead_band_ignores_jitter():
    clock = FakeClock()
    controller = GestureController(GestureMapping(smoothing=1.0, dead_band_cc=2), clock=clock)
    hand = pose("open_palm")
    controller.update([hand])
    rng = np.random.default_rng(0)
    sends = 0
    for _ in range(50):  # a still hand, with detector noise under one CC step
        clock.now += 0.1
        update = controller.update([moved(hand, dx=rng.uniform(-0.005, 0.005))])
        sends += sum(1 for cc, _ in update.ccs if cc == 74)
    assert sends == 0


def test_rate_limiter_with_an_injected_clock():
    clock = FakeClock()
    limiter = RateLimiter(max_rate_hz=20.0, clock=clock)
    assert limiter.offer("cc74", 10) == 10
    clock.now += 0.01
    assert limiter.offer("cc74", 20) is None  # held back
    clock.now += 0.01
    assert limiter.offer("cc74", 30) is None  # replaces the held value
    assert limiter.due() == []
    clock.now += 0.03
    assert limiter.due() == [("cc74", 30)]  # the latest value, once the interval passed
    assert limiter.offer("cc74", 31, dead_band=2) is None  # within the dead-band: dropped
    clock.now += 0.1
    assert limiter.due() == []
    with pytest.raises(MusicRNNError):
        RateLimiter(max_rate_hz=0)


# -- the model file: download with a checksum ------------------------------------------------------


class _Server:
    """A loopback HTTP server serving one payload at /hand_landmarker.task, counting requests."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.requests = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                server.requests += 1
                if self.path != "/hand_landmarker.task":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(server.payload)))
                self.end_headers()
                self.wfile.write(server.payload)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hand_landmarker.task"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "_Server":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_model_download_refuses_a_checksum_mismatch(tmp_path):
    payload = b"not the model" * 1000
    with _Server(payload) as server:
        with pytest.raises(MusicRNNError, match="SHA-256") as info:
            ensure_hand_model(tmp_path, url=server.url,
                              sha256=hashlib.sha256(b"the real model").hexdigest())
    assert server.requests == 1
    assert "nothing was saved" in str(info.value)
    folder = hand_model_path(tmp_path).parent
    assert not folder.exists() or list(folder.iterdir()) == []  # no file, no temporary left


def test_model_download_keeps_a_matching_file_and_reuses_it(tmp_path):
    payload = bytes(range(256)) * 4000  # ~1 MB, several reads
    digest = hashlib.sha256(payload).hexdigest()
    with _Server(payload) as server:
        path = ensure_hand_model(tmp_path, url=server.url, sha256=digest)
        assert path == tmp_path / "models" / "hand_landmarker.task"
        assert path.read_bytes() == payload
        again = ensure_hand_model(tmp_path, url=server.url, sha256=digest)
        assert again == path and server.requests == 1  # cached: no second download
        path.write_bytes(b"damaged")
        ensure_hand_model(tmp_path, url=server.url, sha256=digest)
        assert path.read_bytes() == payload and server.requests == 2  # a damaged copy replaced
        with pytest.raises(MusicRNNError, match="Not Found"):
            ensure_hand_model(tmp_path / "other", url=server.url + ".missing", sha256=digest)


def test_model_download_offline_says_where_to_put_the_file(tmp_path):
    with socket.socket() as sock:  # a port on which nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(MusicRNNError, match="offline") as info:
        ensure_hand_model(tmp_path, url=f"http://127.0.0.1:{port}/hand_landmarker.task",
                          timeout_s=5)
    message = str(info.value)
    assert str(hand_model_path(tmp_path)) in message and "SHA-256" in message
    assert not hand_model_path(tmp_path).exists()


# -- the optional extra ----------------------------------------------------------------------------


def test_without_the_extra_the_camera_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # as if not installed
    with pytest.raises(MusicRNNError, match=r"pip install \.\[gestures\]"):
        require_extra()
    from musicrnn.gestures import start_camera_thread

    with pytest.raises(MusicRNNError, match="gestures"):
        start_camera_thread(LiveControls())


def test_mediapipe_results_become_hands():
    containers = pytest.importorskip("mediapipe.tasks.python.components.containers")
    from mediapipe.tasks.python.vision import HandLandmarkerResult

    hand = pose("peace")
    result = HandLandmarkerResult(
        handedness=[[containers.Category(index=1, score=0.96, category_name="Right")]],
        hand_landmarks=[[containers.NormalizedLandmark(x=x, y=y, z=z)
                         for x, y, z in hand.landmarks]],
        hand_world_landmarks=[],
    )
    hands = hands_from_result(result, aspect=4 / 3)
    assert len(hands) == 1 and hands[0].handedness == "Right"
    assert classify_gesture(hands[0]) == "peace"


def test_a_damaged_model_file_gets_a_clear_message(tmp_path):
    pytest.importorskip("mediapipe")
    from musicrnn.gestures import CameraLoop

    junk = tmp_path / "hand_landmarker.task"
    junk.write_bytes(b"not a model")
    with pytest.raises(MusicRNNError, match="could not load the hand model"):
        CameraLoop(LiveControls(), model_path=junk)
