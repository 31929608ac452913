"""entropix: the optimizers of "Deep Relaxation" as pure optax transforms.

Local entropy (Entropy-SGD), the non-viscous Hamilton-Jacobi proximal step
(HJ, in the paper's Sec. 7.2 form and as the damped fixed point that produced
Table 1) and heat-equation smoothing (HEAT), each an optax
``GradientTransformationExtraArgs`` whose inner loop runs in ``lax.scan``.
``entropix.pde`` holds 1-D reference solutions of the PDEs;
``entropix.diagnostics`` measures the curvature, local entropy and sharpness
of a loss at a point (the widths of minima the paper's Sec. 6 is about).
``masked_grad_fn`` and ``forward_extra_args`` carry ``grad_fn`` through the
optax wrappers that would withhold it; ``entropix.linen`` and
``entropix.nnx`` (which import Flax, so are not imported here) have a Flax
``TrainState`` that forwards it and re-estimate BatchNorm's statistics.
Leaves that are not float arrays (int, bool, PRNG keys) are held as they
are, as ``optax.sgd`` holds them.
``counter_bits`` is the integer hash the Langevin noise is drawn from.
"""

from entropix import diagnostics, pde
from entropix._alias import entropy_sgd, heat, hj, hj_fixed_point
from entropix._compose import forward_extra_args, masked_grad_fn
from entropix._elastic import ElasticState, elastic, elastic_sgd, parle
from entropix._fixed_point import HopfLaxFixedPointState, hopf_lax_fixed_point
from entropix._local_entropy import LocalEntropyState, local_entropy
from entropix._minibatches import minibatch_grad_fn
from entropix._noise import counter_bits
from entropix._schedules import scoping
from entropix._smoothing import GaussianSmoothingState, gaussian_smoothing

__version__ = "0.1.0"

__all__ = [
    "ElasticState",
    "GaussianSmoothingState",
    "HopfLaxFixedPointState",
    "LocalEntropyState",
    "counter_bits",
    "diagnostics",
    "elastic",
    "elastic_sgd",
    "entropy_sgd",
    "forward_extra_args",
    "gaussian_smoothing",
    "heat",
    "hj",
    "hj_fixed_point",
    "hopf_lax_fixed_point",
    "local_entropy",
    "masked_grad_fn",
    "minibatch_grad_fn",
    "parle",
    "pde",
    "scoping",
]
