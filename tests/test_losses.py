import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rcot_jax import losses
from rcot_jax.ids import DegradationId, fourier_exponent
from rcot_jax.models import Critic

RNG = np.random.default_rng(0)


def _numpy_fourier(residual, p, variant):
    values = []
    for r, pb in zip(residual.astype(np.float64), p):
        mag = np.abs(np.fft.fft2(r, axes=(0, 1)))
        if variant == "paper":
            values.append(np.mean(mag ** pb) ** (1.0 / pb))
        else:
            values.append(np.mean(mag ** 2) / 2 if pb == 2 else np.mean(mag))
    return np.mean(values) if variant == "paper" else np.sum(values)


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_fourier_residual_cost_matches_numpy(variant):
    residual = RNG.standard_normal((5, 8, 12, 3)).astype(np.float32) * 0.1
    p = np.array([2, 1, 1, 2, 1], np.int32)
    got = losses.fourier_residual_cost(jnp.asarray(residual), jnp.asarray(p), variant)
    np.testing.assert_allclose(float(got), _numpy_fourier(residual, p, variant), rtol=1e-5)


def test_fourier_variants_differ_as_documented():
    # 'official' p = 2 is mean|F r|^2 / 2 = (H W / 2) mean r^2 by Parseval; 'paper' is sqrt(H W mean r^2).
    r = RNG.standard_normal((1, 8, 8, 3)).astype(np.float32)
    p = jnp.array([2])
    ms = float(np.mean(r.astype(np.float64) ** 2))
    np.testing.assert_allclose(float(losses.fourier_residual_cost(r, p, "official")), 32 * ms, rtol=1e-5)
    np.testing.assert_allclose(float(losses.fourier_residual_cost(r, p, "paper")), np.sqrt(64 * ms), rtol=1e-5)


def test_fourier_cost_rejects_unknown_variant():
    with pytest.raises(ValueError, match="variant='l2'"):
        losses.fourier_residual_cost(jnp.zeros((1, 4, 4, 3)), jnp.array([1]), "l2")


def test_fourier_exponent_from_degradation_id():
    ids = jnp.array([int(i) for i in DegradationId])
    np.testing.assert_array_equal(fourier_exponent(ids), [2, 2, 2, 1, 1, 1, 1, 1, 1])


def test_rmse_paired_l1_and_transport_loss():
    x = RNG.random((4, 8, 8, 3)).astype(np.float32)
    t = RNG.random((4, 8, 8, 3)).astype(np.float32)
    y = RNG.random((4, 8, 8, 3)).astype(np.float32)
    paired = np.array([True, False, True, False])
    p = np.array([2, 1, 1, 1])
    np.testing.assert_allclose(float(losses.residual_rmse(jnp.asarray(x - t))),
                               np.sqrt(np.mean((x - t).astype(np.float64) ** 2)), rtol=1e-5)
    l1 = np.mean(np.abs(t - y)[paired])
    np.testing.assert_allclose(float(losses.paired_l1(t, y, paired)), l1, rtol=1e-5)
    assert float(losses.paired_l1(t, y, np.zeros(4, bool))) == 0.0

    potential = lambda images: images.mean(axis=(1, 2, 3)) * 3.0  # noqa: E731
    loss, terms = losses.transport_loss(potential, x, t, y, paired, p, lambda_f=2.0, lambda_pair=10.0,
                                        variant="official")
    expected_cost = 2.0 * (np.sqrt(np.mean((x - t).astype(np.float64) ** 2)) + _numpy_fourier(x - t, p, "official"))
    np.testing.assert_allclose(float(terms["cost"]), expected_cost, rtol=1e-5)
    np.testing.assert_allclose(float(loss), -3 * t.mean() + expected_cost + 10.0 * l1, rtol=1e-5)


def test_critic_loss():
    potential = lambda images: images.sum(axis=(1, 2, 3))  # noqa: E731
    t = jnp.ones((3, 4, 4, 3))
    y = jnp.zeros((3, 4, 4, 3))
    assert float(losses.critic_loss(potential, t, y)) == pytest.approx(48.0)


@pytest.fixture(scope="module")
def critic64():
    """A float64 critic (P = 32, narrow) for finite differences."""
    with jax.enable_x64(True):
        critic = Critic(patch_size=32, width=8)
        # x4 the official init's scale: F's derivatives well above finite differences' float64 rounding
        params = jax.tree.map(lambda a: 4 * np.asarray(a), jax.jit(critic.init)(jax.random.key(0),
                                                                           jnp.zeros((1, 32, 32, 3))))
        assert jax.tree.leaves(params)[0].dtype == jnp.float64
    return critic, params


def test_gradient_penalty_against_finite_differences(critic64):
    critic, params = critic64
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        t, y = rng.random((2, 2, 32, 32, 3))
        alpha = np.array([0.3, 0.8])

        apply = jax.jit(critic.apply)    # compiled: op by op, every first use of an op compiles on its own

        @jax.jit
        def gp(params):
            return losses.gradient_penalty(lambda z: critic.apply(params, z), t, y, alpha, 10.0)

        # The input gradient inside the penalty equals a central difference of F along a random direction.
        x_hat = alpha[:, None, None, None] * y + (1 - alpha[:, None, None, None]) * t
        g = jax.jit(jax.grad(lambda z: critic.apply(params, z).sum()))(x_hat)
        # F is piecewise linear in its input (LeakyReLU), so a step small enough to cross no kink is exact.
        v = rng.standard_normal(x_hat.shape)
        h = 1e-6
        fd = (apply(params, x_hat + h * v) - apply(params, x_hat - h * v)) / (2 * h)
        np.testing.assert_allclose(np.sum(np.asarray(g) * v, axis=(1, 2, 3)), fd, rtol=1e-5)
        norms = np.sqrt(np.sum(np.asarray(g) ** 2, axis=(1, 2, 3)))
        np.testing.assert_allclose(float(gp(params)), 10 * np.mean((norms - 1) ** 2), rtol=1e-10)

        # d(GP)/d(params) (double backprop) along a random direction in every parameter. The penalty jumps
        # where a LeakyReLU at x_hat changes side, so the step is kept far below the smallest pre-activation.
        grads = jax.jit(jax.grad(gp))(params)
        direction = jax.tree.map(lambda a: rng.standard_normal(a.shape), params)      # on the host, as params
        shifted = lambda s: jax.tree.map(lambda a, d: a + s * d, params, direction)  # noqa: E731
        h = 1e-8
        fd = (gp(shifted(h)) - gp(shifted(-h))) / (2 * h)
        analytic = sum(np.sum(np.asarray(a) * d) for a, d in zip(jax.tree.leaves(grads), jax.tree.leaves(direction)))
        np.testing.assert_allclose(float(analytic), float(fd), rtol=1e-5)


def test_no_nan_at_zero_gradient_and_zero_residual(critic64):
    critic, params = critic64
    zero_critic = jax.tree.map(np.zeros_like, params)  # F constant: its input gradient is exactly 0
    with jax.enable_x64(True):
        t = jnp.zeros((2, 32, 32, 3))
        gp_fn = lambda p: losses.gradient_penalty(lambda z: critic.apply(p, z), t, t + 0.5, jnp.array([0.2, 0.7]), 10.0)  # noqa: E731
        value, grads = jax.jit(jax.value_and_grad(gp_fn))(zero_critic)
        assert float(value) == pytest.approx(10.0)
        assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))

    def cost(restored, variant):
        return losses.transport_cost(x, restored, jnp.array([2, 1]), 1.0, variant)[0]

    x = jnp.full((2, 8, 8, 3), 0.3)
    for variant in ("paper", "official"):
        g = jax.jit(jax.grad(cost), static_argnums=1)(x, variant)  # zero residual: |F r| and the RMSE are 0
        assert np.isfinite(g).all()
