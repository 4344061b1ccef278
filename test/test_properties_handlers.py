"""Property-based tests of the ROS-free cores that the nodes feed messages into.

Wrong sizes, NaN/inf, huge values, empty vectors, out-of-order and duplicate stamps: each core keeps
its documented safe behaviour (rejected, counted, or a fallback), raises nothing, never commands
NaN, and its counters stay consistent. Deterministic (derandomize).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safe_ctrl_ros import systems
from safe_ctrl_ros.control import LqrController
from safe_ctrl_ros.control.nmpc import Nmpc, NmpcResult
from safe_ctrl_ros.control.residual import ResidualSpec, dequantize
from safe_ctrl_ros.control.supervisor import FallbackMode, SupervisedController
from safe_ctrl_ros.errors import ConfigError
from safe_ctrl_ros.learning.adapter import AdapterConfig, OnlineAdapter
from safe_ctrl_ros.learning.model_file import load_model
from safe_ctrl_ros.safety import make_constraints
from safe_ctrl_ros.safety.monitor import ConstraintMonitor, Level
from safe_ctrl_ros.simulation import LockstepGate, PlantSim, TickAction
from safe_ctrl_ros.tasks import make_task

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "config" / "models" / "quadrotor_2d_residual.npz"
STEP_NS = 20_000_000


def check(max_examples: int) -> Any:
    return settings(
        max_examples=max_examples, deadline=None, derandomize=True, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# Message vectors: any float (NaN, inf, huge, subnormal), any size around the right one, empty too.
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([1e308, -1e308, 1e300, -0.0, 5e-324])
SMALL = st.floats(-1.0, 1.0)


def vectors(size: int, extra: int = 2) -> st.SearchStrategy[list[float]]:
    """Mostly plausible vectors of the right size, else anything of size 0 .. size + extra."""
    return st.one_of(
        st.lists(SMALL, min_size=size, max_size=size),
        st.lists(SMALL | FLOATS, min_size=size, max_size=size),
        st.lists(FLOATS, min_size=0, max_size=size + extra),
    )


def stamps() -> st.SearchStrategy[int]:
    """Stamps on the control grid, so duplicates and out-of-order ones are frequent; some far off."""
    return st.one_of(st.integers(0, 30).map(lambda k: k * STEP_NS),
                     st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, -1, 1]))


# --- the constraint monitor ----------------------------------------------------------------------------
CONSTRAINTS = [
    {"kind": "bounded", "name": "pole", "active_dims": [2, 3], "lower": -0.2, "upper": 0.2, "tolerance": 0.05},
    {"kind": "bounded", "name": "force", "variable": "input", "lower": -5.0, "upper": 5.0},
    {"kind": "quadratic", "name": "ball", "variable": "input_and_state", "active_dims": [0, 4],
     "P": [[1.0, 0.0], [0.0, 0.01]], "b": 4.0},
]
MONITOR_EVENTS = st.one_of(
    st.tuples(st.just("state"), stamps(), vectors(4)),
    st.tuples(st.just("command"), st.just(0), vectors(1)),
    st.tuples(st.just("stale"), st.just(0), st.lists(st.floats(0, 10), min_size=1, max_size=1)),
)


@check(120)
@given(events=st.lists(MONITOR_EVENTS, max_size=40), clear_after=st.integers(1, 4))
def test_monitor_counts_every_state_once_and_flags_bad_ones(
    events: list[tuple[str, int, list[float]]], clear_after: int
) -> None:
    mon = ConstraintMonitor(make_constraints(CONSTRAINTS, 4, 1), 4, [0.0], clear_after=clear_after)
    n_rows = len(mon.constraints.row_names)
    newest: int | None = None
    accepted = bad = 0
    for kind, stamp, values in events:
        if kind == "command":
            mon.command(values)
            continue
        if kind == "stale":
            mon.stale(values[0])
            assert mon.request.active
            continue
        step = mon.state(stamp, values)
        if newest is not None and stamp <= newest:
            assert step is None  # duplicate or out of order: ignored, not counted
            continue
        assert step is not None
        newest, accepted = stamp, accepted + 1
        assert step.evaluation.values.shape == (n_rows,)
        assert not np.any(np.isnan(step.evaluation.values))
        if len(values) != 4 or not all(math.isfinite(v) for v in values):
            bad += 1
            assert step.level is Level.ERROR
            assert "non-finite or wrong-size state" in step.message
            assert mon.request.active
        if step.level is Level.ERROR:
            assert mon.request.active
        assert step.message
    st_ = mon.stats
    assert st_.steps == accepted
    assert bad <= st_.violation_steps <= st_.steps
    assert all(0 <= r <= st_.violation_steps for r in st_.row_violations)
    assert not math.isnan(st_.worst_margin)
    assert (st_.first_violation_time is None) == (st_.violation_steps == 0)


# --- the controller's supervisor --------------------------------------------------------------------------
@dataclass
class _Cfg:
    solver: str = "fake"


class FakeNmpc:
    """A primary law that misbehaves on demand: fails, returns NaN/inf, or takes too long."""

    def __init__(self, outcomes: list[tuple[bool, float, float]], nu: int) -> None:
        self.outcomes, self.nu, self.calls, self.resets = outcomes, nu, 0, 0
        self.applied: list[np.ndarray] = []
        self.cfg = _Cfg()
        self.disturbance_states: tuple[int, ...] = ()  # no offset-free estimate (as Nmpc with gain 0)

    def solve(self, x: Any, t: float) -> NmpcResult:
        ok, u, solve_time = self.outcomes[self.calls % len(self.outcomes)] if self.outcomes else (True, 0.0, 0.0)
        self.calls += 1
        low, high = CARTPOLE.input_bounds  # like Nmpc.solve: a finite u is clipped; a NaN one even "succeeds" here
        u_out = np.clip(np.full(self.nu, u), low, high) if math.isfinite(u) else np.full(self.nu, u)
        return NmpcResult(u=u_out, x_pred=np.zeros((1, 1)), u_pred=np.zeros((1, self.nu)), success=ok,
                          status="fake", iterations=1, solve_time_s=solve_time, cost=0.0, max_slack=0.0)

    def reset(self) -> None:
        self.resets += 1

    def note_applied(self, u: Any) -> None:  # the command that went out instead of the last answer
        self.applied.append(np.asarray(u, dtype=float).copy())


CARTPOLE = systems.make("cartpole")
LQR = LqrController(CARTPOLE, [1, 1, 10, 1], 0.1, 0.02)
OUTCOMES = st.lists(st.tuples(st.booleans(), st.one_of(st.floats(-10.0, 10.0), FLOATS),
                              st.sampled_from([0.0, 1e-4, 1.0])), max_size=5)


@check(120)
@given(
    states=st.lists(st.tuples(vectors(4), st.one_of(st.floats(-5, 50), FLOATS), st.sampled_from(["", "request"])),
                    max_size=25),
    outcomes=st.one_of(st.none(), OUTCOMES),
    fallback=st.sampled_from(list(FallbackMode)),
    task=st.sampled_from([None, {"kind": "stabilization", "goal": [0.5, 0.0, 0.0, 0.0]}]),
)
def test_supervisor_never_commands_nan_and_counts_its_fallbacks(
    states: list[tuple[list[float], float, str]], outcomes: list[tuple[bool, float, float]] | None,
    fallback: FallbackMode, task: dict[str, Any] | None,
) -> None:
    nmpc = None if outcomes is None else FakeNmpc(outcomes, CARTPOLE.nu)
    sup = SupervisedController(CARTPOLE, make_task(CARTPOLE, task), LQR, cast(Nmpc, nmpc), fallback,
                               safe_command=[0.5], deadline_s=0.01)
    low, high = CARTPOLE.input_bounds
    fallbacks = 0
    for x, t, request in states:
        told = len(nmpc.applied) if nmpc is not None else 0
        with np.errstate(all="ignore"):
            report = sup.compute(x, t, force_fallback=request)
        if nmpc is not None:  # the NMPC hears of every command that went out instead of its answer
            told_now = nmpc.applied[told:]
            assert len(told_now) == int(report.fallback_active)
            if told_now:
                np.testing.assert_array_equal(told_now[0], report.u)
        assert report.u.shape == (CARTPOLE.nu,)
        assert np.all(np.isfinite(report.u)), report
        assert np.all(report.u >= low)
        assert np.all(report.u <= high)
        fallbacks += report.fallback_active
        assert report.fallback_active == bool(report.fallback_reason)
        if len(x) != 4 or not all(math.isfinite(v) for v in x):
            assert report.fallback_active
            assert report.fallback_reason == "non-finite or wrong-size state"
            np.testing.assert_array_equal(report.u, [0.5])  # the safe command, never LQR on garbage
        elif request:
            assert report.fallback_active
            assert report.fallback_reason.startswith(request)
    assert sup.fallbacks_total == fallbacks


def test_huge_finite_state_gives_the_safe_command_not_nan() -> None:
    """LQR on a huge but finite state overflows to NaN (inf - inf): the supervisor sends the safe command."""
    sup = SupervisedController(CARTPOLE, make_task(CARTPOLE, None), LQR, None, safe_command=[0.0])
    with np.errstate(all="ignore"):
        report = sup.compute([1e308, -1e308, 1e308, -1e308], 0.0)
    assert report.fallback_active
    assert "non-finite command from lqr" in report.fallback_reason
    np.testing.assert_array_equal(report.u, [0.0])
    assert sup.fallbacks_total == 1


# --- the plant's lockstep gate and actuator guard ------------------------------------------------------------
GATE_OPS = st.one_of(
    st.tuples(st.just("sent"), stamps(), st.floats(0.0, 0.5)),
    st.tuples(st.just("command"), stamps(), st.floats(0.0, 0.5)),
    st.tuples(st.just("tick"), st.just(0), st.floats(0.0, 0.5)),
)


@check(150)
@given(ops=st.lists(GATE_OPS, max_size=60), timeout=st.floats(0.05, 2.0), resend=st.floats(0.01, 1.0))
def test_lockstep_gate_answers_only_the_awaited_stamp_and_times_out_once(
    ops: list[tuple[str, int, float]], timeout: float, resend: float
) -> None:
    gate = LockstepGate(timeout, resend)
    now = 0.0
    waiting: int | None = None
    since = last_send = 0.0
    for op, stamp, dt in ops:
        now += dt  # a monotonic clock
        if op == "sent":
            gate.sent(stamp, now)
            waiting, since, last_send = stamp, now, now
        elif op == "command":  # any stamp, duplicates and stale ones included
            assert gate.accepts(stamp) == (waiting is not None and stamp == waiting)
            if gate.accepts(stamp):
                gate.answered()
                waiting = None
        else:
            action = gate.tick(now)
            if waiting is None:
                assert action is TickAction.NONE
            elif now - since >= timeout:
                assert action is TickAction.TIMEOUT  # exactly once: the gate stops waiting
                waiting = None
            elif now - last_send >= resend:
                assert action is TickAction.RESEND
                last_send = now
            else:
                assert action is TickAction.NONE
        assert gate.waiting_for == waiting


@pytest.mark.parametrize(("timeout", "resend"), [(0.0, 0.1), (1.0, -1.0), (math.nan, 0.1), (1.0, math.nan)])
def test_lockstep_gate_rejects_non_positive_periods(timeout: float, resend: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        LockstepGate(timeout, resend)


@check(100)
@given(commands=st.lists(vectors(1, extra=3), max_size=40))
def test_plant_actuator_guard_clips_or_rejects_and_counts(commands: list[list[float]]) -> None:
    sim = PlantSim(CARTPOLE, 0.02, 2)
    low, high = CARTPOLE.input_bounds
    passed = 0
    for u in commands:
        out = sim.check_command(u)
        if len(u) != CARTPOLE.nu or not all(math.isfinite(v) for v in u):
            assert out is None
            continue
        assert out is not None
        assert np.all(np.isfinite(out))
        assert np.all(out >= low)
        assert np.all(out <= high)
        passed += 1
        sim.advance(out)
    assert sim.stats.rejected_commands + passed == len(commands)
    assert sim.stats.clipped_commands <= passed
    assert sim.stats.steps == passed


# --- the adapter's transition buffer ----------------------------------------------------------------------
QUAD = systems.make("quadrotor_2d")
START = load_model(MODEL, QUAD.nx, QUAD.nu)


@check(60)
@given(
    transitions=st.lists(st.tuples(vectors(6), vectors(2), vectors(6)), min_size=1, max_size=30),
    outlier_scales=st.sampled_from([0.0, 50.0]),
)
def test_adapter_keeps_only_finite_transitions_and_counts_the_rest(
    transitions: list[tuple[list[float], list[float], list[float]]], outlier_scales: float
) -> None:
    adapter = OnlineAdapter(START, QUAD, AdapterConfig(buffer_size=10, val_every=3, batch_size=2, min_val=2,
                                                       outlier_scales=outlier_scales))
    added = unusable = 0
    for x, u, x_next in transitions:
        usable = len(x) == 6 and len(u) == 2 and len(x_next) == 6 and all(map(math.isfinite, [*x, *u, *x_next]))
        result = adapter.add(x, u, x_next)
        assert isinstance(result, bool)
        assert usable or not result  # wrong size or non-finite: never stored
        added += result
        unusable += not usable
    assert adapter.seen == added
    assert adapter.seen + adapter.outliers + unusable == len(transitions)
    for ring in (adapter.train_buf, adapter.val_buf):
        n = ring.count
        assert n <= ring.capacity
        assert np.all(np.isfinite(ring.x[:n]))
        assert np.all(np.isfinite(ring.u[:n]))
        assert np.all(np.isfinite(ring.y[:n]))
    if adapter.val_buf.count:  # one NaN sample would make every loss NaN; outlier filtering keeps it finite
        with np.errstate(over="ignore"):
            loss = adapter.val_loss()
        assert math.isfinite(loss) if outlier_scales > 0 else not math.isnan(loss)


# --- model updates (ModelUpdate -> dequantize, in the controller) --------------------------------------------
SPEC = ResidualSpec(6, 2, (4,))


@check(80)
@given(
    layer_sizes=st.one_of(st.just([8, 4, 6]), st.lists(st.integers(-1, 10), max_size=4)),
    activation=st.sampled_from(["relu", "tanh", ""]),
    weights=st.one_of(st.lists(st.integers(-32768, 32767), min_size=SPEC.num_params, max_size=SPEC.num_params),
                      st.lists(st.integers(-32768, 32767), max_size=80)),
    scales=st.lists(st.one_of(st.floats(0, 1e-3), FLOATS), min_size=0, max_size=5),
)
def test_model_update_is_applied_finite_or_rejected(
    layer_sizes: list[int], activation: str, weights: list[int], scales: list[float]
) -> None:
    try:
        theta = dequantize(SPEC, layer_sizes, activation, np.array(weights, dtype=np.int16), scales)
    except ConfigError:
        return
    assert theta.shape == (SPEC.num_params,)
    assert np.all(np.isfinite(theta))


# --- message conversion (needs the built interfaces) -------------------------------------------------------
@check(100)
@given(values=st.lists(FLOATS | SMALL, max_size=16), ns=st.integers(-(2**31) * 10**9, 2**31 * 10**9 - 1))
def test_messages_round_trip_bit_for_bit(values: list[float], ns: int) -> None:
    pytest.importorskip("rclpy")
    from rclpy.serialization import deserialize_message, serialize_message

    from safe_ctrl_ros.msg import Command, State
    from safe_ctrl_ros.ros.convert import command_msg, stamp_to_ns, state_msg, vector_of

    arr = np.array(values, dtype=np.float64)
    for msg, field, kind in ((state_msg(arr, ns), "x", State), (command_msg(arr, ns), "u", Command)):
        back = deserialize_message(serialize_message(msg), kind)  # what a subscriber gets
        assert stamp_to_ns(back.header.stamp) == ns
        out = vector_of(getattr(back, field))
        assert out.shape == arr.shape
        assert out.dtype == np.float64
        np.testing.assert_array_equal(out.view(np.int64), arr.view(np.int64))  # NaN payloads and -0.0 too


@pytest.mark.parametrize("ns", [2**31 * 10**9, -(2**31) * 10**9 - 1, 10**20])
def test_stamp_outside_time_range_is_an_error_not_a_wrap(ns: int) -> None:
    pytest.importorskip("rclpy")
    from safe_ctrl_ros.ros.convert import ns_to_stamp

    with pytest.raises(ValueError, match="outside the range"):
        ns_to_stamp(ns)


# --- the adapter's transition matching ------------------------------------------------------------------
@given(st.data(), st.integers(2, 12))
@settings(max_examples=200, deadline=None)
def test_every_transition_is_matched_once_whatever_the_arrival_order(data: st.DataObject, steps: int) -> None:
    """States x_0..x_steps and commands u_0..u_steps-1 arrive in any order, some twice (lockstep
    resends): each (x_k, u_k, x_k+1) comes out exactly once, with the right parts."""
    from safe_ctrl_ros.learning.matching import TransitionMatcher

    dt = 20_000_000
    events = [("x", k) for k in range(steps + 1)] + [("u", k) for k in range(steps)]
    events += data.draw(st.lists(st.sampled_from(events), max_size=steps))  # duplicates
    order = data.draw(st.permutations(events))
    matcher = TransitionMatcher(dt, keep=64)
    out = []
    for kind, k in order:
        if kind == "x":
            out += matcher.state(k * dt, np.array([float(k)]))
        else:
            out += matcher.command(k * dt, np.array([100.0 + k]))
    got = sorted((float(x[0]), float(u[0]), float(xn[0])) for x, u, xn in out)
    assert got == [(float(k), 100.0 + k, float(k + 1)) for k in range(steps)]
