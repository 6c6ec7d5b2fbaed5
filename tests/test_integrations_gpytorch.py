"""kops.integrations.gpytorch: kops kernels in GPyTorch, side by side with GPyTorch's own,
on scikit-learn's bundled diabetes data (n = 200 of 442, 10 features, standardised)."""
import gpytorch
import pytest
import torch
from sklearn.datasets import load_diabetes

from kops.integrations.gpytorch import (KopsLaplacianKernel, KopsMatern12Kernel, KopsMatern32Kernel,
                                        KopsMatern52Kernel, KopsRBFKernel)
from kops.integrations.linear_operator import KopsLinearOperator

F64 = torch.float64
PAIRS = [  # (kops kernel, GPyTorch's own base kernel)
    (KopsRBFKernel, lambda d: gpytorch.kernels.RBFKernel(ard_num_dims=d)),
    (KopsLaplacianKernel, lambda d: gpytorch.kernels.MaternKernel(nu=0.5, ard_num_dims=d)),
    (KopsMatern32Kernel, lambda d: gpytorch.kernels.MaternKernel(nu=1.5, ard_num_dims=d)),
    (KopsMatern52Kernel, lambda d: gpytorch.kernels.MaternKernel(nu=2.5, ard_num_dims=d)),
]


def _diabetes(n=200):
    X, y = load_diabetes(return_X_y=True)
    X, y = torch.tensor(X[:n], dtype=F64), torch.tensor(y[:n], dtype=F64)
    return (X - X.mean(0)) / X.std(0), (y - y.mean()) / y.std()


class _ExactGP(gpytorch.models.ExactGP):
    def __init__(self, X, y, covar):
        super().__init__(X, y, gpytorch.likelihoods.GaussianLikelihood())
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = covar

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def _model(X, y, covar):
    model = _ExactGP(X, y, covar).double()
    return model, gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)


def _hyperparameters(model):
    covar = model.covar_module
    base = getattr(covar, "base_kernel", covar)
    return torch.cat([base.lengthscale.detach().reshape(-1), covar.outputscale.detach().reshape(1),
                      model.likelihood.noise.detach().reshape(1)])


@pytest.mark.parametrize("kops_kernel, own_kernel", PAIRS)
def test_covariances_and_diagonals_equal_gpytorchs_kernels(kops_kernel, own_kernel, generator):
    x1 = torch.randn(31, 4, generator=generator, dtype=F64)
    x2 = torch.randn(23, 4, generator=generator, dtype=F64)
    ours, theirs = kops_kernel(ard_num_dims=4).double(), gpytorch.kernels.ScaleKernel(own_kernel(4)).double()
    ell = torch.rand(1, 4, generator=generator, dtype=F64) + 0.5
    for k in (ours, getattr(theirs, "base_kernel")):
        k.lengthscale = ell
    ours.outputscale, theirs.outputscale = 1.9, 1.9
    op = ours(x1, x2).evaluate_kernel()
    assert isinstance(op, KopsLinearOperator)
    torch.testing.assert_close(op.to_dense(), theirs(x1, x2).to_dense(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours(x1, x2[:1] + x1, diag=True), theirs(x1, x2[:1] + x1, diag=True),
                               rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours(x1, diag=True), torch.full((31,), 1.9, dtype=F64))


@pytest.mark.parametrize("kops_kernel, own_kernel", PAIRS)
@pytest.mark.parametrize("cholesky", [True, False])
def test_marginal_likelihood_and_its_gradient_equal_gpytorchs(kops_kernel, own_kernel, cholesky):
    X, y = _diabetes(120)
    results = []
    for covar in (kops_kernel(ard_num_dims=10), gpytorch.kernels.ScaleKernel(own_kernel(10))):
        model, mll = _model(X, y, covar)
        model.train()
        torch.manual_seed(0)  # the same probe vectors for both on the CG / Lanczos path
        with gpytorch.settings.max_cholesky_size(10_000 if cholesky else 0), gpytorch.settings.cg_tolerance(1e-3):
            loss = -mll(model(X), y)
        params = [p for _, p in sorted(model.named_parameters(), key=lambda item: item[0].split(".")[-1])]
        results.append((loss.detach(), torch.autograd.grad(loss, params)))
    (loss_k, grads_k), (loss_g, grads_g) = results
    torch.testing.assert_close(loss_k, loss_g, rtol=1e-8 if cholesky else 1e-6, atol=0)
    for gk, gg in zip(grads_k, grads_g):
        torch.testing.assert_close(gk.reshape(-1), gg.reshape(-1), rtol=1e-6 if cholesky else 1e-4, atol=1e-8)


def test_exactgp_trains_by_cg_on_kops_products_like_gpytorchs_rbf(monkeypatch):
    """20 Adam steps under max_cholesky_size(0): kops (K never formed) and GPyTorch side by side."""
    X, y = _diabetes(200)
    trained = {}
    for name, covar in (("kops", KopsRBFKernel(ard_num_dims=10)),
                        ("gpytorch", gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel(ard_num_dims=10)))):
        if name == "kops":  # CG and Lanczos only: forming the kops covariance would fail the test
            monkeypatch.setattr(KopsLinearOperator, "to_dense", lambda self: pytest.fail("K was formed"))
        model, mll = _model(X, y, covar)
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
        torch.manual_seed(0)
        losses = []
        with gpytorch.settings.max_cholesky_size(0), gpytorch.settings.cg_tolerance(1e-4):
            for _ in range(20):
                optimizer.zero_grad()
                loss = -mll(model(X), y)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
        monkeypatch.undo()
        model.eval()
        with torch.no_grad(), gpytorch.settings.max_cholesky_size(0):  # predictions by CG too
            mean = model(X[:50]).mean
        model.train()
        with torch.no_grad(), gpytorch.settings.max_cholesky_size(10_000):  # exact, for both
            exact = float(-mll(model(X), y))
        trained[name] = (losses, _hyperparameters(model), exact, mean)
    (losses_k, theta_k, exact_k, mean_k), (losses_g, theta_g, exact_g, mean_g) = trained["kops"], trained["gpytorch"]
    assert losses_g[-1] < losses_g[0] - 0.1  # it did train
    # Tolerances: products agree to 1e-14; CG at tolerance 1e-4 amplifies that to about 1e-7.
    torch.testing.assert_close(torch.tensor(losses_k), torch.tensor(losses_g), rtol=1e-5, atol=0)
    torch.testing.assert_close(theta_k, theta_g, rtol=1e-4, atol=0)
    assert abs(exact_k - exact_g) <= 1e-5 * abs(exact_g)
    torch.testing.assert_close(mean_k, mean_g, rtol=1e-4, atol=1e-6)


def test_batch_dimensions_are_refused_clearly():
    with pytest.raises(ValueError, match="no batch dimensions.*batch_shape=\\(2,\\)"):
        KopsRBFKernel(batch_shape=torch.Size([2]))
    k = KopsMatern52Kernel()
    with pytest.raises(ValueError, match="no batch dimensions.*\\(2, 5, 3\\)"):
        k(torch.randn(2, 5, 3), torch.randn(2, 5, 3)).to_dense()
    assert KopsMatern12Kernel is KopsLaplacianKernel
    with pytest.raises(TypeError, match="Prior"):
        KopsRBFKernel(outputscale_prior=1.0)
