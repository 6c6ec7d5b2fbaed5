"""Adapters that let other libraries use kops kernel operators as their linear operators.

Each submodule imports its library when it is imported itself (never when kops is):

* :mod:`kops.integrations.scipy`: a ``scipy.sparse.linalg.LinearOperator`` (cg, eigsh, lsqr);
* :mod:`kops.integrations.linear_operator`: a ``linear_operator.LinearOperator`` subclass;
* :mod:`kops.integrations.gpytorch`: GPyTorch kernels whose covariance is that operator, and
  EigenPro's Nystrom preconditioner for GPyTorch's conjugate gradients.
"""
