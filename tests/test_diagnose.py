"""odeverify diagnose: each failure mode flagged on a planted field and not on a healthy one;
bad input gives errors naming what is wrong; a failing measurement becomes a record."""
from __future__ import annotations

import json

import numpy as np
import pytest

from odeverify.diagnose import DIAGNOSE_SCHEMA, Diagnosis, UserModel, diagnose, load_field, parse_z0
from odeverify.diagnose import measures

torch = pytest.importorskip("torch")


# ----------------------------------------------------------------------------- fields
def linear(diag):
    a = np.diag(np.asarray(diag, dtype=np.float64))

    def f(t, z):
        return z @ a.T

    return f


class TorchLinear(torch.nn.Module):
    """z' = A z with A a trainable parameter (diagonal at start)."""

    def __init__(self, diag):
        super().__init__()
        self.A = torch.nn.Parameter(torch.diag(torch.tensor(diag, dtype=torch.float64)))

    def forward(self, t, z):
        return z @ self.A.T


class TorchMLP(torch.nn.Module):
    def __init__(self, n=3, hidden=8, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.l1 = torch.nn.Linear(n, hidden).double()
        self.l2 = torch.nn.Linear(hidden, n).double()
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=torch.float64))

    def forward(self, t, z):
        return self.l2(torch.tanh(self.l1(z)))


def rotation(fast):
    """Rotation at angular speed 1 + fast * sigmoid(10 (|z| - 2)): |z| is conserved, so the
    inputs with |z| > 2 rotate ~fast times faster for the whole span and need that much more work."""
    def f(t, z):
        r = np.sqrt(np.sum(z * z, axis=1, keepdims=True))
        w = 1.0 + fast / (1.0 + np.exp(-10 * (r - 2.0)))
        return w * np.stack([-z[:, 1], z[:, 0]], axis=1)

    return f


def lorenz(t, z):
    x, y, w = z[:, 0], z[:, 1], z[:, 2]
    return np.stack([10 * (y - x), x * (28 - w) - y, x * y - 8 / 3 * w], axis=1)


def run_one(field, z0, span, name, **kw):
    d = diagnose(field, z0, span, quick=True, only=[name], **kw)
    rec = d.record(name)
    assert rec is not None, [r.property for r in d.records]
    return rec


# ----------------------------------------------------------------------------- instability
def test_instability_flags_a_finite_time_blow_up():
    z0 = 2.0 + 0.1 * np.arange(8.0).reshape(4, 2)  # z' = z^2 blows up at t = 1/z0 < 0.5
    rec = run_one(lambda t, z: z * z, z0, (0, 1), "instability")
    assert rec.verdict == "fail", rec.message
    assert "blow-up" in rec.message


def test_instability_passes_a_decaying_field():
    rec = run_one(lambda t, z: -z, "normal:4x2", (0, 1), "instability")
    assert rec.verdict == "pass", rec.message
    assert rec.details["max_real_eigenvalue"] == pytest.approx(-1.0)


def test_instability_flags_steps_outside_the_stability_region():
    rec = run_one(linear([-1.0, -1000.0]), "normal:4x2", (0, 1), "instability")
    assert rec.verdict == "fail", rec.message
    assert rec.details["stability"]["max_abs_R"] > 1


# ----------------------------------------------------------------------------- stiffness
def test_stiffness_flags_a_stiff_linear_field_of_known_ratio():
    rec = run_one(linear([-1.0, -1000.0]), "normal:4x2", (0, 1), "stiffness")
    assert rec.verdict == "fail", rec.message
    assert rec.details["max_stiffness_ratio"] == pytest.approx(1000.0, rel=1e-6)
    assert rec.measured > 1  # the implicit method measured cheaper
    assert "kvaerno5" in rec.details["recommendation"]


def test_stiffness_passes_a_nonstiff_field():
    rec = run_one(linear([-1.0, -2.0]), "normal:4x2", (0, 1), "stiffness")
    assert rec.verdict == "pass", rec.message
    assert rec.details["max_stiffness_ratio"] == pytest.approx(2.0, rel=1e-6)


# ----------------------------------------------------------------------------- work
def _work_z0():
    z0 = np.random.default_rng(0).standard_normal((32, 2))
    z0[:3] *= 3 / np.linalg.norm(z0[:3], axis=1, keepdims=True)  # samples 0-2 start in the fast region
    z0[3:] *= 1 / np.maximum(1.0, np.linalg.norm(z0[3:], axis=1, keepdims=True))  # the rest well outside it
    return z0


def test_work_flags_a_region_of_inputs_that_needs_ten_times_the_work():
    rec = run_one(rotation(100.0), _work_z0(), (0, 1), "work")
    assert rec.verdict == "fail", rec.message
    assert rec.measured > measures.WORK_TAIL
    assert set(rec.details["worst_samples"][:3]) == {0, 1, 2}  # the costliest inputs are the planted ones


def test_work_passes_an_even_field():
    rec = run_one(rotation(0.0), _work_z0(), (0, 1), "work")
    assert rec.verdict == "pass", rec.message
    # per-sample counts are the shared formula: 2 + 6 * attempted steps (dopri5, FSAL)
    assert all((v - 2) % 6 == 0 for v in rec.details["nfe_per_sample"])


# ----------------------------------------------------------------------------- adjoint and gradient
def test_adjoint_flags_backsolve_on_a_dissipative_field():
    d = diagnose(TorchLinear([-1.0, -40.0]), "normal:4x2", (0, 1), quick=True, mode="backsolve",
                 only=["adjoint", "gradient"])
    adj, grad = d.record("adjoint"), d.record("gradient")
    assert adj.verdict == "fail", adj.message
    assert adj.details["reconstruction_error"] > 1  # z(t0) lost
    assert "discrete" in adj.details["recommendation"]
    assert grad.verdict == "fail", grad.message


def test_adjoint_and_gradient_pass_a_healthy_field():
    d = diagnose(TorchLinear([-1.0, -0.5]), "normal:4x2", (0, 1), quick=True, mode="backsolve",
                 only=["adjoint", "gradient"])
    assert d.record("adjoint").verdict == "pass", d.record("adjoint").message
    assert d.record("gradient").verdict == "pass", d.record("gradient").message


def test_gradient_skips_without_a_mode_and_for_numpy_fields():
    assert run_one(TorchLinear([-1.0, -0.5]), "normal:2x2", (0, 1), "gradient").verdict == "skip"
    rec = run_one(linear([-1.0]), "normal:2x1", (0, 1), "adjoint")
    assert rec.verdict == "skip" and "automatic differentiation" in rec.message


# ----------------------------------------------------------------------------- solver dependence
def test_solver_dependence_flags_chaos_and_passes_a_short_span():
    z0 = np.array([[1.0, 1.0, 20.0], [2.0, 1.0, 25.0]])
    chaotic = run_one(lorenz, z0, (0, 12), "solver_dependence")
    assert chaotic.verdict == "fail", chaotic.message
    short = run_one(lorenz, z0, (0, 0.2), "solver_dependence")
    assert short.verdict == "pass", short.message


# ----------------------------------------------------------------------------- the diagnosis
def test_a_failing_measurement_is_an_error_record_and_the_rest_still_run(monkeypatch):
    def broken(ctx):
        raise RuntimeError("planted")

    plan = (("instability", measures.measure_instability), ("broken", broken))
    monkeypatch.setattr("odeverify.diagnose.run.MEASUREMENTS", plan)
    seen = []
    d = diagnose(lambda t, z: -z, "normal:2x2", (0, 1), quick=True, progress=seen.append)
    props = [r.property for r in d.records]
    assert "diagnose_instability" in props and "diagnose_broken" in props
    assert d.record("broken").verdict == "error" and "planted" in d.record("broken").message
    assert len(seen) == len(d.records) and not d.healthy


def test_an_interrupted_diagnosis_keeps_its_records(monkeypatch):
    def interrupt(ctx):
        raise KeyboardInterrupt

    plan = (("instability", measures.measure_instability), ("stop", interrupt),
            ("work", measures.measure_work))
    monkeypatch.setattr("odeverify.diagnose.run.MEASUREMENTS", plan)
    d = diagnose(lambda t, z: -z, "normal:2x2", (0, 1), quick=True)
    assert not d.complete
    assert [r.property for r in d.records if r.property != "diagnose_dynamics"] == ["diagnose_instability"]


def test_json_document_and_table():
    d = diagnose(TorchMLP(), "normal:4x3", (0, 1), quick=True, only=["instability", "work"])
    doc = json.loads(json.dumps(d.to_dict()))
    assert doc["schema"] == DIAGNOSE_SCHEMA and doc["model"]["state_dim"] == 3
    assert [row["mode"] for row in doc["summary"]] == ["instability", "work"]
    assert all(row["verdict"] == "pass" for row in doc["summary"]), d.table()
    assert "instability" in d.table() and "PASS" in d.table()
    assert isinstance(d, Diagnosis)


# ----------------------------------------------------------------------------- the model and bad input
def test_user_model_parameters_and_problem():
    m = UserModel.build(TorchMLP(), "normal:5x3", (0, 1))
    assert m.library == "torch" and set(m.params) == {"l1.weight", "l1.bias", "l2.weight", "l2.bias"}
    assert m.autonomous and m.batched_time
    # the Jacobian by autodiff agrees with central differences of the model's own NumPy view
    z = m.z0[:2]
    jac = m.jacobian(0.0, z)
    f = m.numpy_field()
    eps = 1e-6
    fd = np.stack([(f(0.0, z + eps * e) - f(0.0, z - eps * e)) / (2 * eps) for e in np.eye(3)], axis=-1)
    np.testing.assert_allclose(jac, fd, rtol=1e-6, atol=1e-8)
    prob = m.problem()
    assert prob.n == 3 and set(prob.params) == set(m.params)


def test_time_dependent_field_without_batched_time_is_evaluated_per_sample():
    def f(t, z):
        return -z + torch.sin(t)  # a scalar t only: (B,) would not broadcast against (B, 3)

    m = UserModel.build(f, "normal:4x3", (0, 1))
    assert not m.autonomous and not m.batched_time
    sol = m.solve(batch="per-sample")
    ref = m.solve()
    np.testing.assert_allclose(sol.ys.numpy()[-1], ref.ys.numpy()[-1], rtol=1e-4)


def test_z0_specs_and_files(tmp_path):
    a = parse_z0("normal:6x2:seed=3")
    np.testing.assert_array_equal(a, np.random.default_rng(3).standard_normal((6, 2)))
    assert parse_z0("uniform:5x4:scale=2").shape == (5, 4)
    path = tmp_path / "z.npy"
    np.save(path, np.ones((3, 2)))
    assert parse_z0(str(path)).shape == (3, 2)
    with pytest.raises(ValueError, match="dimension n=2.*dimension 3"):
        parse_z0(str(path), n=3)
    with pytest.raises(ValueError, match="does not give the state dimension"):
        parse_z0("normal:4")
    with pytest.raises(ValueError, match="neither a file nor"):
        parse_z0("no_such_file.npy")


@pytest.mark.parametrize("path, match", [
    ("no_such_pkg.model:field", "module 'no_such_pkg.model' cannot be imported"),
    ("odeverify.diagnose.model:load_fild", "no attribute 'load_fild'; did you mean 'load_field'"),
    ("odeverify.diagnose.model", "one colon"),
    ("odeverify.diagnose.model:DEFAULT_RTOL", "not a callable"),
])
def test_load_field_errors_name_the_path(path, match):
    with pytest.raises(ValueError, match=match):
        load_field(path)


def test_bad_inputs_raise_before_any_work(tmp_path):
    calls = []

    def f(t, z):
        calls.append(1)
        return z[:, :1]

    with pytest.raises(ValueError, match=r"returned shape \(2, 1\) for z of shape \(2, 2\)"):
        diagnose(f, np.ones((2, 2)), (0, 1))
    assert len(calls) <= 2  # only the calls that tell its library and check its output: no solve
    with pytest.raises(ValueError, match="non-finite values.*sample"):
        diagnose(lambda t, z: z / 0.0, np.ones((2, 2)), (0, 1))
    path = tmp_path / "z.npy"
    np.save(path, np.ones((4, 5)))
    with pytest.raises(ValueError, match="z0 of shape \\(4, 5\\)"):
        diagnose(TorchMLP(), str(path), (0, 1))
    with pytest.raises(ValueError, match="requires_grad=False"):
        diagnose(TorchMLP().requires_grad_(False), "normal:2x3", (0, 1))
    with pytest.raises(ValueError, match="did you mean 'dopri5'"):
        diagnose(TorchMLP(), "normal:2x3", (0, 1), method="dopri55")
    with pytest.raises(ValueError, match="unknown gradient mode"):
        diagnose(TorchMLP(), "normal:2x3", (0, 1), mode="backsolv")
    with pytest.raises(ValueError, match="t_span"):
        diagnose(TorchMLP(), "normal:2x3", (1, 1))
    with pytest.raises(ValueError, match="t_eval"):
        diagnose(TorchMLP(), "normal:2x3", (0, 1), t_eval=[0.5, 2.0])
    with pytest.raises(ValueError, match="only="):
        diagnose(TorchMLP(), "normal:2x3", (0, 1), only=["stifness"])


# ----------------------------------------------------------------------------- the worked example (slow)
@pytest.mark.slow
def test_worked_example_stiff_field_is_flagged_and_dissipative_is_not(monkeypatch):
    """examples/diagnose_fields.py: the stiff field (ratio 1e4) must be flagged stiff with kvaerno5
    measured cheaper, the dissipative one must pass every solver measurement."""
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    stiff = diagnose("examples.diagnose_fields:make_stiff", "normal:8", (0, 1), quick=True,
                     only=["stiffness"])
    rec = stiff.record("stiffness")
    assert rec.verdict == "fail", rec.message
    assert rec.details["max_stiffness_ratio"] > 1e3
    healthy = diagnose("examples.diagnose_fields:make_dissipative", "normal:8", (0, 1), quick=True,
                       mode="backsolve", only=["instability", "stiffness", "work", "adjoint", "gradient",
                                               "solver_dependence"])
    assert all(r.verdict == "pass" for r in healthy.records), healthy.table()
