"""GMMHead: a k-component diagonal Gaussian mixture per token (GIVT, Tschannen et al. 2023).

    p(x | c) = sum_k pi_k(c) N(x; mu_k(c), diag(sigma_k(c)^2)),   x in R^dim
    pi = softmax(logits),   sigma = softplus(raw) + min_scale

One linear layer (or a one-hidden-layer MLP when ``hidden`` is set) maps cond to
``[k logits | k*dim locs | k*dim raw scales]``. The training loss is the exact NLL in nats,

    -log p(x | c) = -logsumexp_k [ log pi_k - 1/2 sum_d ((x_d - mu_kd) / sigma_kd)^2
                                   - sum_d log sigma_kd - dim/2 log(2 pi) ],

written out here (not delegated to torch.distributions, so tests can compare the two).

Initialisation: GIVT zero-initialises the output layer. With every component identical at init the
responsibilities are all 1/k and every component gets the same gradient, so a fully zero layer
never breaks the symmetry (the mixture stays one Gaussian). We therefore zero the weight matrix and
the logit bias, set the scale bias so every sigma starts at ``init_scale``, and draw the loc bias
from N(0, init_loc_std^2): a spread of starting means, as in k-means' random init.

Temperatures, against GIVT's ``get_pdf`` (big_vision, big_vision/models/proj/givt/givt.py at
ce85a4a97032cab9e2e4418f42672852935fbe19; decode.py passes ``temp`` and ``temp_probs`` to it):

* ``temperature = t`` multiplies every standard deviation after the floor, sigma_k -> t sigma_k
  (variance t^2 sigma_k^2): GIVT's ``scales = scales * t`` after ``jnp.maximum(scales, scale_tol)``
  (givt.py L678-680). Same convention.
* ``logit_temperature = tau`` divides the mixture logits, pi_k ∝ exp(l_k / tau) (the usual softmax
  temperature; tau = 0 picks the argmax component). GIVT instead multiplies them,
  ``prob_logits = prob_logits * t`` (givt.py L670-671), so its ``temperature_probs`` t is an
  inverse temperature, pi_k ∝ exp(t l_k) (t = 0 is uniform), equal to ours iff t = 1 / tau.
  ``sample`` / ``distribution`` accept GIVT's knob as ``temperature_probs=t`` (with tau left at 1).

Guidance (below) acts on the raw parameters first, then the temperatures.

Classifier-free guidance, ``cfg_scale = s``: with conditional parameters (l_c, mu_c, sigma_c) and
unconditional ones (l_u, mu_u, sigma_u) from the same output layer (so component k of both is the
same output unit), sample from the mixture with

    logits = l_u + s (l_c - l_u),   mu_k = mu_u,k + s (mu_c,k - mu_u,k),   sigma_k = sigma_c,k.

The logit rule is exact density-based guidance on the component index (pi_c^s pi_u^(1-s),
renormalised); the mean rule is exact density-based guidance per paired component when the two
scales agree (N(mu_c, S)^s N(mu_u, S)^(1-s) is proportional to N(mu_u + s (mu_c - mu_u), S)).
It costs one extra projection, unlike GIVT's DB-CFG, which rejection-samples p_c^(1+w) / p_u^w.
It is a heuristic where the conditional and unconditional fits use component k for different
modes, and it ignores the per-component normaliser of the product.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from latentar.heads.base import Head
from latentar.pretrained import register_to_config
from latentar.torch_utils import draw_device


class GMMHead(Head):
    """Diagonal Gaussian mixture head. See the module docstring for the formulas.

    Args:
        dim: token dimension d.
        cond_dim: backbone state dimension.
        num_mixtures: k.
        min_scale: floor added to softplus for every sigma.
        hidden: width of one SiLU hidden layer before the output layer; None for a linear head.
        init_scale: every sigma at initialisation (1.0 suits unit-variance latents).
        init_loc_std: std of the random initial component means (symmetry breaking).
    """

    @register_to_config
    def __init__(self, dim: int, cond_dim: int, num_mixtures: int = 16, min_scale: float = 1e-3,
                 hidden: int | None = None, init_scale: float = 1.0, init_loc_std: float = 1.0):
        super().__init__(dim, cond_dim)
        if not isinstance(num_mixtures, int) or num_mixtures < 1:
            raise ValueError(f"GMMHead: num_mixtures must be a positive int, got {num_mixtures!r}")
        if not min_scale > 0:
            raise ValueError(f"GMMHead: min_scale must be > 0, got {min_scale}")
        if not init_scale > min_scale:
            raise ValueError(f"GMMHead: init_scale ({init_scale}) must exceed min_scale ({min_scale})")
        if hidden is not None and (not isinstance(hidden, int) or hidden < 1):
            raise ValueError(f"GMMHead: hidden must be None or a positive int, got {hidden!r}")
        if not init_loc_std >= 0:
            raise ValueError(f"GMMHead: init_loc_std must be >= 0, got {init_loc_std}")
        self.num_mixtures = num_mixtures
        self.min_scale = min_scale

        k = num_mixtures
        if hidden is None:
            self.trunk = nn.Identity()
            width = cond_dim
        else:
            self.trunk = nn.Sequential(nn.Linear(cond_dim, hidden), nn.SiLU())
            width = hidden
        self.out = nn.Linear(width, k + 2 * k * dim)  # [k logits | (k, dim) locs | (k, dim) raw scales]
        with torch.no_grad():
            self.out.weight.zero_()
            self.out.bias.zero_()
            self.out.bias[k:k + k * dim].normal_(0.0, init_loc_std)
            # softplus^-1(y) = log(expm1(y)) so that softplus(bias) + min_scale = init_scale
            self.out.bias[k + k * dim:] = math.log(math.expm1(init_scale - min_scale))

    # ---------------------------------------------------------------- parameters
    def params(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Flattened cond (N, cond_dim) -> logits (N, k), loc (N, k, dim), scale (N, k, dim)."""
        k, d = self.num_mixtures, self.dim
        h = self.out(self.trunk(cond))
        if h.dtype in (torch.float16, torch.bfloat16):
            h = h.float()  # log-densities in at least float32 under autocast
        logits = h[:, :k]
        loc = h[:, k:k + k * d].reshape(-1, k, d)
        scale = F.softplus(h[:, k + k * d:]).reshape(-1, k, d) + self.min_scale
        return logits, loc, scale

    @staticmethod
    def _tempered_logits(logits: torch.Tensor, logit_temperature: float,
                         temperature_probs: float | None) -> torch.Tensor:
        """Mixture logits after the weight temperature (module docstring): l / tau, or GIVT's l * t.
        Callers handle tau = 0 (argmax) before calling."""
        if temperature_probs is None:
            return logits / logit_temperature
        if logit_temperature != 1.0:
            raise ValueError(f"GMMHead: pass logit_temperature (divides the logits) or temperature_probs (GIVT's, "
                             f"multiplies them), not both; got {logit_temperature} and {temperature_probs}")
        if not (math.isfinite(temperature_probs) and temperature_probs >= 0):
            raise ValueError(f"GMMHead: temperature_probs must be a finite number >= 0, got {temperature_probs}")
        return logits * temperature_probs

    def _sampling_params(self, cond, cond_uncond, cfg_scale):
        """Parameters after classifier-free guidance (module docstring); flattened cond in."""
        logits, loc, scale = self.params(cond)
        if cond_uncond is not None:
            logits_u, loc_u, _ = self.params(cond_uncond)
            logits = logits_u + cfg_scale * (logits - logits_u)
            loc = loc_u + cfg_scale * (loc - loc_u)
        return logits, loc, scale

    def distribution(self, cond: torch.Tensor, temperature: float = 1.0, logit_temperature: float = 1.0,
                     cond_uncond: torch.Tensor | None = None, cfg_scale: float = 1.0,
                     temperature_probs: float | None = None) -> MixtureSameFamily:
        """The mixture as ``MixtureSameFamily(Categorical, Independent(Normal, 1))``.

        Batch shape is cond's leading shape ((B, T) or (N,)), event shape (dim,). ``temperature``,
        ``logit_temperature``, ``temperature_probs`` and guidance act as in ``sample``, so ``sample``
        draws from exactly this distribution and its ``log_prob`` is the guided, tempered log-density
        (``temperature`` and ``logit_temperature`` must be > 0 here).
        """
        for name, value in (("temperature", temperature), ("logit_temperature", logit_temperature)):
            if not value > 0:  # a density needs sigma > 0; tau = 0 (argmax) has none
                raise ValueError(f"GMMHead.distribution: {name} must be > 0, got {value}")
        c, lead = self._flatten_cond(cond)
        u = self._flatten_uncond(cond, cond_uncond, cfg_scale)
        logits, loc, scale = self._sampling_params(c, u, cfg_scale)
        k, d = self.num_mixtures, self.dim
        logits = self._tempered_logits(logits, logit_temperature, temperature_probs).reshape(*lead, k)
        loc = loc.reshape(*lead, k, d)
        scale = (scale * temperature).reshape(*lead, k, d)
        return MixtureSameFamily(Categorical(logits=logits), Independent(Normal(loc, scale), 1))

    # ---------------------------------------------------------------- interface
    def log_prob(self, cond: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """log p(target | cond) in nats, by logsumexp: (B, T) or (N,)."""
        c, lead = self._flatten_cond(cond)
        x = self._flatten_target(target, lead)
        logits, loc, scale = self.params(c)
        x = x.to(loc.dtype)
        z = (x[:, None, :] - loc) / scale                                       # (N, k, d)
        comp = -0.5 * z.pow(2).sum(-1) - scale.log().sum(-1) - 0.5 * self.dim * math.log(2 * math.pi)
        return torch.logsumexp(F.log_softmax(logits, dim=-1) + comp, dim=-1).reshape(lead)

    def loss(self, cond: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Exact per-token NLL in nats: cond (B, T, cond_dim), target (B, T, dim) -> (B, T)."""
        return -self.log_prob(cond, target)

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, temperature: float = 1.0, logit_temperature: float = 1.0,
               generator: torch.Generator | None = None, cond_uncond: torch.Tensor | None = None,
               cfg_scale: float = 1.0, temperature_probs: float | None = None) -> torch.Tensor:
        """Draw one token per position: cond (B, T, cond_dim) -> (B, T, dim).

        k ~ Categorical(softmax(logits / logit_temperature)) (argmax when logit_temperature == 0),
        or softmax(logits * temperature_probs) when GIVT's ``temperature_probs`` is given;
        x = mu_k + temperature * sigma_k * z with z ~ N(0, I). The component is drawn before z,
        from the same generator, so two calls with equally seeded generators that differ only in
        ``temperature`` use the same k and z.
        """
        self._check_temperature("temperature", temperature)
        self._check_temperature("logit_temperature", logit_temperature)
        c, lead = self._flatten_cond(cond)
        u = self._flatten_uncond(cond, cond_uncond, cfg_scale)
        logits, loc, scale = self._sampling_params(c, u, cfg_scale)
        n, d = loc.shape[0], self.dim
        if logit_temperature == 0 and temperature_probs is None:
            idx = logits.argmax(-1)
        else:
            probs = F.softmax(self._tempered_logits(logits, logit_temperature, temperature_probs), dim=-1)
            # draws happen on the generator's device (a CPU generator may drive a CUDA model: the
            # convention of latentar.diffusion.sampling and diffusers' randn_tensor)
            g_dev = draw_device(generator, probs.device)
            idx = torch.multinomial(probs.to(g_dev), 1, generator=generator).squeeze(-1).to(probs.device)  # (N,)
        gather = idx[:, None, None].expand(n, 1, d)
        loc_k = loc.gather(1, gather).squeeze(1)                                  # (N, d)
        scale_k = scale.gather(1, gather).squeeze(1)
        g_dev = draw_device(generator, loc.device)
        z = torch.randn(n, d, generator=generator, device=g_dev, dtype=loc.dtype).to(loc.device)
        x = loc_k + temperature * scale_k * z
        return x.to(cond.dtype).reshape(*lead, d)
