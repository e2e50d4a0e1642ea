"""Feature maps phi for linear attention: phi(q) . phi(k) stands in for exp(q . k / sqrt(d)).

Every map takes queries and keys laid out (batch, heads, tokens, head_dim) and returns
non-negative features (batch, heads, tokens, feature_dim), computed in float32.
``offset`` is the position of the first token (used by cosFormer's re-weighting and
needed when decoding one token at a time from a carried state).
"""

from __future__ import annotations

import abc
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hedgehog.attention.linear_attention import upcast


class FeatureMap(nn.Module, abc.ABC):
    """Base class: a map applied to queries and keys of shape (B, H, T, D)."""

    def __init__(self, num_heads: int, head_dim: int) -> None:
        super().__init__()
        if num_heads < 1 or head_dim < 1:
            raise ValueError(
                f"num_heads and head_dim must be positive, got num_heads={num_heads}, head_dim={head_dim}"
            )
        self.num_heads = num_heads
        self.head_dim = head_dim

    # whether phi depends on the token's position (the forward's offset): cosFormer's re-weighting does
    uses_position = False

    @property
    def feature_dim(self) -> int:
        """F, the width of phi(x)."""
        return self.head_dim

    @abc.abstractmethod
    def forward(self, q: Tensor, k: Tensor, offset: int = 0) -> tuple[Tensor, Tensor]:
        """Return (phi_q(q), phi_k(k)), each (B, H, T, feature_dim) in float32."""

    def kernel(self, q: Tensor, k: Tensor) -> Tensor | None:
        """phi_q(q_i) . phi_k(k_j) as a (B, H, Tq, Tk) float32 tensor computed without the features, for
        maps with a closed form (cheaper than the features when Tk is below feature_dim); else None."""
        return None


class PointwiseFeatureMap(FeatureMap):
    """A map that applies one function phi to queries and keys alike."""

    @abc.abstractmethod
    def phi(self, x: Tensor) -> Tensor:
        """phi of a float32 tensor (..., head_dim) -> (..., feature_dim)."""

    def forward(self, q: Tensor, k: Tensor, offset: int = 0) -> tuple[Tensor, Tensor]:
        return self.phi(upcast(q)), self.phi(upcast(k))


class Elu1FeatureMap(PointwiseFeatureMap):
    """1 + ELU (Katharopoulos et al., the linear transformer)."""

    def phi(self, x: Tensor) -> Tensor:
        return F.elu(x) + 1.0


class ReluFeatureMap(PointwiseFeatureMap):
    """max(x, 0); rows whose features are all zero fall back on the eps of the normaliser."""

    def phi(self, x: Tensor) -> Tensor:
        return F.relu(x)


class ExpFeatureMap(FeatureMap):
    """exp(t x), elementwise: spiky but not monotone in q . k (the paper's exp(t) baseline).

    Queries are shifted by their own max over features, which cancels in the normaliser
    (every weight of one query row is scaled by the same factor).
    """

    def __init__(self, num_heads: int, head_dim: int, t: float = 1.0) -> None:
        super().__init__(num_heads, head_dim)
        self.t = t

    def forward(self, q: Tensor, k: Tensor, offset: int = 0) -> tuple[Tensor, Tensor]:
        zq, zk = self.t * upcast(q), self.t * upcast(k)
        return torch.exp(zq - zq.amax(-1, keepdim=True).detach()), torch.exp(zk)


class Taylor2FeatureMap(PointwiseFeatureMap):
    """Second-order Taylor expansion of exp: phi(q).phi(k) = 1 + s + s^2/2, s = q.k/sqrt(d).

    The features themselves change sign; the kernel 1 + s + s^2/2 is always positive.
    """

    @property
    def feature_dim(self) -> int:
        return 1 + self.head_dim + self.head_dim**2

    def kernel(self, q: Tensor, k: Tensor) -> Tensor:
        s = (upcast(q) @ upcast(k).transpose(-1, -2)) / math.sqrt(self.head_dim)
        return 1.0 + s + 0.5 * s * s

    def phi(self, x: Tensor) -> Tensor:
        d = self.head_dim
        ones = x.new_ones(*x.shape[:-1], 1)
        first = x / d**0.25
        second = (x.unsqueeze(-1) * x.unsqueeze(-2)).flatten(-2) / (math.sqrt(2.0) * math.sqrt(d))
        return torch.cat([ones, first, second], dim=-1)


def _per_head_identity(num_heads: int, dim_in: int, dim_out: int) -> Tensor:
    return torch.eye(dim_in, dim_out).expand(num_heads, dim_in, dim_out).clone()


class HedgehogFeatureMap(FeatureMap):
    """Hedgehog: z = x W + b per head, phi(x) = [f(z), f(-z)], untied maps for q and k.

    W starts as the identity and b at zero (paper, Sec. 4). ``activation`` picks f:
    ``softmax`` applies a softmax over the feature dim to each half (the stable form used
    by LoLCATs and ThunderKittens); ``exp`` is the paper's listing exp(+-z), stabilised by
    subtracting each token's max |z| (exact for queries, a per-key rescale for keys).
    ``temperature`` divides z before f; 1.0 is the paper's setting. ``"auto"`` is head_dim^(-1/4)
    (a deviation, for training from scratch): at the identity init log phi(q).phi(k) rises with
    q.k at about 1/(d T^2), so T = 1 is sqrt(d) times flatter than softmax attention's 1/sqrt(d)
    and d^(-1/4) matches it (experiments/associative_recall/README.md).
    """

    activations = ("softmax", "exp")

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        feature_dim_half: int | None = None,
        activation: str = "softmax",
        temperature: float | str = 1.0,
    ) -> None:
        super().__init__(num_heads, head_dim)
        if activation not in self.activations:
            raise ValueError(f"Hedgehog activation must be one of {self.activations}, got {activation!r}")
        if isinstance(temperature, str) and temperature != "auto":
            raise ValueError(f"Hedgehog temperature must be a number or 'auto', got {temperature!r}")
        self.activation = activation
        self.temperature = head_dim**-0.25 if temperature == "auto" else float(temperature)
        self.half = feature_dim_half or head_dim
        self.weight_q = nn.Parameter(_per_head_identity(num_heads, head_dim, self.half))
        self.bias_q = nn.Parameter(torch.zeros(num_heads, self.half))
        self.weight_k = nn.Parameter(_per_head_identity(num_heads, head_dim, self.half))
        self.bias_k = nn.Parameter(torch.zeros(num_heads, self.half))

    @property
    def feature_dim(self) -> int:
        return 2 * self.half

    def _project(self, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        x = upcast(x)
        z = torch.einsum("bhtd,hde->bhte", x, weight.to(x.dtype)) + bias.to(x.dtype)[:, None]
        return z / self.temperature

    def _f(self, z: Tensor) -> Tensor:
        if self.activation == "softmax":
            return torch.cat([torch.softmax(z, dim=-1), torch.softmax(-z, dim=-1)], dim=-1)
        m = z.abs().amax(-1, keepdim=True).detach()
        return torch.cat([torch.exp(z - m), torch.exp(-z - m)], dim=-1)

    def forward(self, q: Tensor, k: Tensor, offset: int = 0) -> tuple[Tensor, Tensor]:
        if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and k.dtype == q.dtype:
            from hedgehog import kernels  # triton is optional; imported only when a kernel runs

            if kernels.supported(q.shape[-1], self.feature_dim, q.shape[-1]):
                # the map kernels: features written once in q's dtype, the same function and gradients
                options = {"activation": self.activation, "temperature": self.temperature}
                return (
                    kernels.hedgehog_features(q, self.weight_q, self.bias_q, **options),
                    kernels.hedgehog_features(k, self.weight_k, self.bias_k, **options),
                )
        return self.pytorch_features(q, k)

    def pytorch_features(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """The map in PyTorch (float32 math) on any device: what ``forward`` runs off CUDA, and the form the
        map kernels are checked against and benchmarks time as "the PyTorch map"."""
        fq = self._f(self._project(q, self.weight_q, self.bias_q))
        fk = self._f(self._project(k, self.weight_k, self.bias_k))
        return fq, fk


class T2RFeatureMap(PointwiseFeatureMap):
    """T2R (Kasai et al.): relu(x W + b), one trainable map per head shared by q and k.

    Trained end to end with the task loss; trained by distillation it is T2R-HH.
    """

    def __init__(self, num_heads: int, head_dim: int, feature_dim: int | None = None) -> None:
        super().__init__(num_heads, head_dim)
        self._feature_dim = feature_dim or head_dim
        bound = 1.0 / math.sqrt(head_dim)
        self.weight = nn.Parameter(torch.empty(num_heads, head_dim, self._feature_dim))
        self.bias = nn.Parameter(torch.empty(num_heads, self._feature_dim))
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    @property
    def feature_dim(self) -> int:
        return self._feature_dim

    def phi(self, x: Tensor) -> Tensor:
        z = torch.einsum("bhtd,hde->bhte", x, self.weight.to(x.dtype)) + self.bias.to(x.dtype)[:, None]
        return F.relu(z)


def orthogonal_gaussian(rows: int, dim: int, generator: torch.Generator | None = None) -> Tensor:
    """Random features omega (rows, dim): orthogonal blocks with chi-distributed row norms."""
    # drawn where the generator lives (the CPU), also when a model is built under a CUDA default device
    device = generator.device if generator is not None else None
    blocks = []
    for _ in range(math.ceil(rows / dim)):
        gaussian = torch.randn(dim, dim, generator=generator, device=device)
        q, _ = torch.linalg.qr(gaussian)
        blocks.append(q.T)
    omega = torch.cat(blocks)[:rows]
    norms = torch.randn(rows, dim, generator=generator, device=device).norm(dim=1, keepdim=True)
    return omega * norms


class PerformerFeatureMap(FeatureMap):
    """FAVOR+ positive random features: exp(w.x - |x|^2/2) / sqrt(m), x scaled by d^-1/4.

    The same omega serves queries and keys (it must, for an unbiased estimate). With
    ``redraw_interval`` set, omega is redrawn every that many training forwards.
    """

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        num_features: int | None = None,
        redraw_interval: int | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(num_heads, head_dim)
        self.num_features = num_features or head_dim
        self.redraw_interval = redraw_interval
        self._generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.register_buffer("omega", orthogonal_gaussian(self.num_features, head_dim, self._generator))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    @property
    def feature_dim(self) -> int:
        return self.num_features

    def redraw(self) -> None:
        omega = orthogonal_gaussian(self.num_features, self.head_dim, self._generator)
        self.omega.copy_(omega.to(self.omega.device))

    def _features(self, x: Tensor, is_query: bool) -> Tensor:
        x = upcast(x) * self.head_dim**-0.25
        logits = x @ self.omega.to(x.dtype).T - 0.5 * (x * x).sum(-1, keepdim=True)
        if is_query:
            logits = logits - logits.amax(-1, keepdim=True).detach()
        return torch.exp(logits) / math.sqrt(self.num_features)

    def forward(self, q: Tensor, k: Tensor, offset: int = 0) -> tuple[Tensor, Tensor]:
        if self.training and self.redraw_interval:
            if self.calls.item() % self.redraw_interval == 0:
                self.redraw()
            self.calls += 1
        return self._features(q, is_query=True), self._features(k, is_query=False)


class CosFormerFeatureMap(FeatureMap):
    """cosFormer: [relu(x) cos(pi i / 2M), relu(x) sin(pi i / 2M)] for the token at position i.

    M is ``max_len`` when given (required for causal use, where the length is not known
    in advance), else the length of the sequence at hand (non-causal use).
    """

    uses_position = True

    def __init__(self, num_heads: int, head_dim: int, max_len: int | None = None) -> None:
        super().__init__(num_heads, head_dim)
        self.max_len = max_len

    @property
    def feature_dim(self) -> int:
        return 2 * self.head_dim

    def _reweight(self, x: Tensor, offset: int) -> Tensor:
        length = x.shape[-2]
        m = self.max_len or length
        if offset + length > m:
            raise ValueError(
                f"cosFormer was configured for max_len={m} positions but got tokens up to "
                f"position {offset + length}; raise max_len in the attention config"
            )
        angle = math.pi / (2 * m) * torch.arange(offset, offset + length, device=x.device)
        x = F.relu(upcast(x))
        return torch.cat([x * angle.cos()[:, None], x * angle.sin()[:, None]], dim=-1)

    def forward(self, q: Tensor, k: Tensor, offset: int = 0) -> tuple[Tensor, Tensor]:
        return self._reweight(q, offset), self._reweight(k, offset)
