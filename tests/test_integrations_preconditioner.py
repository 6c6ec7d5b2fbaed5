"""EigenPro's Nystrom preconditioner in linear_operator's / GPyTorch's conjugate gradients."""
import gpytorch
import pytest
import torch
from linear_operator.operators import AddedDiagLinearOperator, DiagLinearOperator
from linear_operator.utils.linear_cg import linear_cg
from sklearn.datasets import load_diabetes

from kops.integrations.gpytorch import EigenProPreconditioner, KopsRBFKernel
from kops.integrations.linear_operator import KopsLinearOperator

F64 = torch.float64


def _diabetes(n=442):
    X, y = load_diabetes(return_X_y=True)
    X, y = torch.tensor(X[:n], dtype=F64), torch.tensor(y[:n], dtype=F64)
    return (X - X.mean(0)) / X.std(0), (y - y.mean()) / y.std()


def _cg_products(A, rhs, preconditioner, tol):
    calls = [0]

    def product(v):
        calls[0] += 1
        return A._matmul(v)

    solution = linear_cg(product, rhs, tolerance=tol, max_iter=1000, preconditioner=preconditioner)
    residual = float((A._matmul(solution) - rhs).norm() / rhs.norm())
    return calls[0], residual


@pytest.mark.parametrize("n_nystrom", [None, 200])
def test_the_preconditioner_cuts_cg_iterations_to_a_tolerance(n_nystrom):
    X, y = _diabetes()
    pre = EigenProPreconditioner(50, n_nystrom)
    A = KopsLinearOperator(X, X, torch.tensor(2.0, dtype=F64), 1.0, kernel="gaussian", preconditioner=pre)
    A = A.add_diagonal(torch.tensor(1e-2, dtype=F64))
    assert isinstance(A, AddedDiagLinearOperator) and A.preconditioner_override is pre
    closure, p_operator, logdet = A._preconditioner()
    assert A._preconditioner()[0] is closure  # built once per operator
    rhs = y.unsqueeze(-1)
    plain, plain_residual = _cg_products(A, rhs, None, 1e-4)
    preconditioned, residual = _cg_products(A, rhs, closure, 1e-4)
    # Measured: 149 products without, 53 with all 442 points as the sample, 69 with 200.
    assert preconditioned <= 0.6 * plain
    assert residual <= 2e-4 and plain_residual <= 2e-4
    # The preconditioner is P = I + U diag(g) U^T; linear_operator needs P, P^{-1} and log det P.
    P = p_operator.to_dense()
    torch.testing.assert_close(closure(P), torch.eye(442, dtype=F64), rtol=0, atol=1e-10)
    torch.testing.assert_close(logdet, torch.logdet(P), rtol=1e-10, atol=1e-10)
    assert pre.last_["n_nystrom"] == (442 if n_nystrom is None else 200)


def test_exactgp_marginal_likelihood_with_the_preconditioner_matches_cholesky():
    X, y = _diabetes(300)
    values = {}
    for name, pre in (("cholesky", None), ("preconditioned cg", EigenProPreconditioner(40))):
        likelihood = gpytorch.likelihoods.GaussianLikelihood()
        covar = KopsRBFKernel(ard_num_dims=10, preconditioner=pre)

        class GP(gpytorch.models.ExactGP):
            def forward(self, x):
                return gpytorch.distributions.MultivariateNormal(self.mean(x), covar(x))

        model = GP(X, y, likelihood).double()
        model.mean = gpytorch.means.ZeroMean()
        covar.double().lengthscale, covar.outputscale, likelihood.noise = 2.5, 1.0, 0.05
        mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
        model.train()
        torch.manual_seed(0)
        with gpytorch.settings.max_cholesky_size(0 if pre else 10_000), gpytorch.settings.num_trace_samples(30), \
                gpytorch.settings.cg_tolerance(1e-4):
            loss = -mll(model(X), y)
        grads = torch.autograd.grad(loss, [covar.raw_lengthscale, covar.raw_outputscale,
                                           likelihood.noise_covar.raw_noise])
        if pre is not None:  # GPyTorch's CG ran with it
            assert pre.last_["n_components"] == 40
        values[name] = (float(loss.detach()), torch.cat([g.reshape(-1) for g in grads]))
    (loss_c, grad_c), (loss_p, grad_p) = values["cholesky"], values["preconditioned cg"]
    # A stochastic (Lanczos) estimate of log det: close, not equal.
    assert abs(loss_p - loss_c) <= 0.02 * abs(loss_c)
    assert float((grad_p - grad_c).norm()) <= 0.1 * float(grad_c.norm())


def test_bad_arguments_and_operators_are_refused():
    with pytest.raises(ValueError, match="n_components"):
        EigenProPreconditioner(0)
    with pytest.raises(ValueError, match="n_nystrom"):
        EigenProPreconditioner(50, 40)
    x = torch.randn(30, 2, dtype=F64)
    dense = gpytorch.kernels.RBFKernel().double()(x).evaluate_kernel()
    A = AddedDiagLinearOperator(dense, DiagLinearOperator(torch.ones(30, dtype=F64)),
                                preconditioner_override=EigenProPreconditioner(5))
    with pytest.raises(TypeError, match="kops kernel operator"):
        A._preconditioner()
    with pytest.raises(TypeError, match="callable"):
        KopsLinearOperator(x, x, 1.0, preconditioner=3)


def test_a_constant_multiple_of_a_kops_operator_is_the_outputscale(generator):
    x = torch.randn(200, 3, generator=generator, dtype=F64)
    noise = DiagLinearOperator(torch.full((200,), 0.1, dtype=F64))
    v = torch.randn(200, 2, generator=generator, dtype=F64)
    results = []
    for op in (KopsLinearOperator(x, x, 1.5, 2.0) * 1.5, KopsLinearOperator(x, x, 1.5, 3.0)):
        A = AddedDiagLinearOperator(op, noise, preconditioner_override=EigenProPreconditioner(10))
        closure, _, logdet = A._preconditioner()
        results.append((closure(v), logdet))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-10, atol=1e-12)


def test_scale_kernel_around_a_kops_kernel_keeps_the_preconditioner():
    # ScaleKernel multiplies its base kernel's operator by its outputscale; the kops operator
    # absorbs the constant (outputscale k c) instead of becoming a ConstantMulLinearOperator,
    # whose added diagonal would drop the preconditioner (CG then ran unpreconditioned).
    X, y = _diabetes()
    pre = EigenProPreconditioner(50)
    covar = gpytorch.kernels.ScaleKernel(KopsRBFKernel(preconditioner=pre)).double()
    covar.base_kernel.lengthscale, covar.base_kernel.outputscale, covar.outputscale = 2.0, 2.0, 0.75
    with torch.no_grad():  # the products of CG below, without the parameters' graph
        K = covar(X).evaluate_kernel()
    assert isinstance(K, KopsLinearOperator)
    torch.testing.assert_close(K.outputscale, torch.tensor(1.5, dtype=F64))
    torch.testing.assert_close(K.to_dense(), 1.5 * torch.exp(-torch.cdist(X, X).square() / 8.0))
    A = K.add_diagonal(torch.tensor(1e-2, dtype=F64))
    assert isinstance(A, AddedDiagLinearOperator) and A.preconditioner_override is pre
    rhs = y.unsqueeze(-1)
    plain, _ = _cg_products(A, rhs, None, 1e-4)
    preconditioned, residual = _cg_products(A, rhs, A._preconditioner()[0], 1e-4)
    assert preconditioned <= 0.6 * plain and residual <= 2e-4
    # a negative or non-scalar constant is linear_operator's ConstantMulLinearOperator as before
    assert not isinstance(K * -1.0, KopsLinearOperator)


def test_exactgp_with_scale_kernel_equals_the_kops_outputscale():
    X, y = _diabetes(300)
    results = []
    for wrapped in (True, False):
        pre = EigenProPreconditioner(40)
        likelihood = gpytorch.likelihoods.GaussianLikelihood()
        base = KopsRBFKernel(ard_num_dims=10, preconditioner=pre)
        covar = gpytorch.kernels.ScaleKernel(base) if wrapped else base

        class GP(gpytorch.models.ExactGP):
            def forward(self, x):
                return gpytorch.distributions.MultivariateNormal(self.mean(x), covar(x))

        model = GP(X, y, likelihood).double()
        model.mean = gpytorch.means.ZeroMean()
        base.lengthscale, base.outputscale, likelihood.noise = 2.5, (1.0 if wrapped else 1.3), 0.05
        if wrapped:
            covar.outputscale = 1.3
        mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
        model.train()
        torch.manual_seed(0)
        with gpytorch.settings.max_cholesky_size(0), gpytorch.settings.num_trace_samples(30):
            loss = -mll(model(X), y)
        assert pre.last_["n_components"] == 40  # GPyTorch's CG used the preconditioner
        grads = torch.autograd.grad(loss, [base.raw_lengthscale, covar.raw_outputscale])
        results.append((loss.detach(), grads))
    (loss_w, grads_w), (loss_p, grads_p) = results
    torch.testing.assert_close(loss_w, loss_p, rtol=1e-8, atol=0)
    for g_w, g_p in zip(grads_w, grads_p):  # softplus(raw) = 1.3 in both: the same raw gradient
        torch.testing.assert_close(g_w, g_p, rtol=1e-6, atol=1e-10)
