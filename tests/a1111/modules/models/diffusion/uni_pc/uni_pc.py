"""Mirrors modules/models/diffusion/uni_pc/uni_pc.py of A1111 1.10.1 (UniPC, Zhao et al. 2023):
``NoiseScheduleVP`` (its 'discrete' schedule, the one A1111 builds), ``UniPC`` (model /
data-prediction wrappers, ``get_time_steps`` for the three skip types, the B(h) update of
variants bh1 / bh2 and the vary_coeff update, and the multistep ``sample`` loop with its
warm-up of lower orders, ``lower_order_final`` and no corrector on the last step) and
``interpolate_fn``. Same call structure and coefficients as upstream, written anew. Left out:
the continuous 'linear' / 'cosine' schedules, ``model_wrapper``, thresholding, the singlestep
solver and the noise-prediction branches, none of which the WebUI's UniPC reaches (it builds a
discrete schedule with predict_x0=True, thresholding=False, method='multistep').

What T-SAM relies on: the model is called on the initial latent, then once per update on the
*predicted* latent x_t, before that update's ``after_update``; the corrector then builds the
step's latent anew. bh1 / bh2 start it from ``x_t_`` (made from the previous latent); so does
vary_coeff, but at order 1 its predictor adds no term and ``x_t`` *is* ``x_t_``: a change made
in place to the latent the model saw stays in the corrected latent.
"""

import torch


def interpolate_fn(x, xp, yp):
    """Piecewise-linear y(x) through the keypoints (xp, yp) [C, K] (xp ascending), continued
    linearly beyond both ends by the outermost segments; x [N, C] -> [N, C]."""
    k = xp.shape[1]
    xp, yp = xp.to(x.device), yp.to(x.device)
    right = torch.stack([torch.searchsorted(xp[c].contiguous(), x[:, c].contiguous()) for c in range(xp.shape[0])], dim=1)
    right = right.clamp(1, k - 1)
    x0, x1 = torch.gather(xp.expand(x.shape[0], -1), 1, right - 1), torch.gather(xp.expand(x.shape[0], -1), 1, right)
    y0, y1 = torch.gather(yp.expand(x.shape[0], -1), 1, right - 1), torch.gather(yp.expand(x.shape[0], -1), 1, right)
    return y0 + (x - x0) * (y1 - y0) / (x1 - x0)


def expand_dims(v, dims):
    """v [N] -> [N, 1, ..., 1] with ``dims`` dimensions in all."""
    return v[(...,) + (None,) * (dims - 1)]


class NoiseScheduleVP:
    """q(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I) of a discrete DPM trained on n = 0 .. N-1,
    read at continuous t = (n + 1) / N by interpolating log(alpha_t) = 0.5 log(alphas_cumprod)."""

    def __init__(self, schedule="discrete", betas=None, alphas_cumprod=None, continuous_beta_0=0.1, continuous_beta_1=20.):
        if schedule != "discrete":
            raise ValueError(f"the stand-in builds only the 'discrete' schedule, not {schedule}")
        log_alphas = 0.5 * (torch.log(1 - betas).cumsum(dim=0) if betas is not None else torch.log(alphas_cumprod))
        self.schedule = schedule
        self.total_N = len(log_alphas)
        self.T = 1.
        self.t_array = torch.linspace(0., 1., self.total_N + 1)[1:].reshape((1, -1))
        self.log_alpha_array = log_alphas.reshape((1, -1))

    def marginal_log_mean_coeff(self, t):
        return interpolate_fn(t.reshape((-1, 1)), self.t_array, self.log_alpha_array).reshape((-1))

    def marginal_alpha(self, t):
        return torch.exp(self.marginal_log_mean_coeff(t))

    def marginal_std(self, t):
        return torch.sqrt(1. - torch.exp(2. * self.marginal_log_mean_coeff(t)))

    def marginal_lambda(self, t):
        """Half log-SNR: log(alpha_t) - log(sigma_t)."""
        log_mean = self.marginal_log_mean_coeff(t)
        return log_mean - 0.5 * torch.log(1. - torch.exp(2. * log_mean))

    def inverse_lambda(self, lamb):
        log_alpha = -0.5 * torch.logaddexp(torch.zeros((1,)).to(lamb.device), -2. * lamb)
        t = interpolate_fn(log_alpha.reshape((-1, 1)), torch.flip(self.log_alpha_array, [1]), torch.flip(self.t_array, [1]))
        return t.reshape((-1,))


class UniPC:
    def __init__(self, model_fn, noise_schedule, predict_x0=True, thresholding=False, max_val=1., variant="bh1",
                 condition=None, unconditional_condition=None, before_sample=None, after_sample=None, after_update=None):
        self.model_fn_ = model_fn
        self.noise_schedule = noise_schedule
        self.variant = variant
        self.predict_x0 = predict_x0
        self.thresholding = thresholding
        self.max_val = max_val
        self.condition, self.unconditional_condition = condition, unconditional_condition
        self.before_sample, self.after_sample, self.after_update = before_sample, after_sample, after_update

    def model(self, x, t):
        cond, uncond = self.condition, self.unconditional_condition
        if self.before_sample is not None:
            x, t, cond, uncond = self.before_sample(x, t, cond, uncond)
        res = self.model_fn_(x, t, cond, uncond)
        if self.after_sample is not None:
            x, t, cond, uncond, res = self.after_sample(x, t, cond, uncond, res)
        return res[1] if isinstance(res, tuple) else res

    def noise_prediction_fn(self, x, t):
        return self.model(x, t)

    def data_prediction_fn(self, x, t):
        """x0 = (x - sigma_t eps) / alpha_t, from the noise the model predicts at (x, t)."""
        eps = self.noise_prediction_fn(x, t)
        dims = x.dim()
        alpha_t, sigma_t = self.noise_schedule.marginal_alpha(t), self.noise_schedule.marginal_std(t)
        return (x - expand_dims(sigma_t, dims) * eps) / expand_dims(alpha_t, dims)

    def model_fn(self, x, t):
        return self.data_prediction_fn(x, t) if self.predict_x0 else self.noise_prediction_fn(x, t)

    def get_time_steps(self, skip_type, t_T, t_0, N, device):
        """N + 1 times from t_T down to t_0: uniform in log-SNR, in t, or in sqrt(t)."""
        if skip_type == "logSNR":
            ns = self.noise_schedule
            lambda_T = ns.marginal_lambda(torch.tensor(t_T).to(device)).cpu().item()
            lambda_0 = ns.marginal_lambda(torch.tensor(t_0).to(device)).cpu().item()
            return ns.inverse_lambda(torch.linspace(lambda_T, lambda_0, N + 1).to(device))
        if skip_type == "time_uniform":
            return torch.linspace(t_T, t_0, N + 1).to(device)
        if skip_type == "time_quadratic":
            return torch.linspace(t_T ** 0.5, t_0 ** 0.5, N + 1).pow(2).to(device)
        raise ValueError(f"Unsupported skip_type {skip_type}, need to be 'logSNR' or 'time_uniform' or 'time_quadratic'")

    def multistep_uni_pc_update(self, x, model_prev_list, t_prev_list, t, order, **kwargs):
        if len(t.shape) == 0:
            t = t.view(-1)
        if "bh" in self.variant:
            return self.multistep_uni_pc_bh_update(x, model_prev_list, t_prev_list, t, order, **kwargs)
        assert self.variant == "vary_coeff"
        return self.multistep_uni_pc_vary_update(x, model_prev_list, t_prev_list, t, order, **kwargs)

    def _differences(self, model_prev_list, t_prev_list, h, order, lambda_prev_0, first_only):
        """rk_i = (lambda_{prev i} - lambda_{prev 0}) / h and D1_i = (m_{prev i} - m_{prev 0}) / rk_i for i < order."""
        rks, D1s = [], []
        for i in range(1, order):
            rk = (self.noise_schedule.marginal_lambda(t_prev_list[-(i + 1)]) - lambda_prev_0) / h
            rk = rk[0] if first_only else rk
            rks.append(rk)
            D1s.append((model_prev_list[-(i + 1)] - model_prev_list[-1]) / rk)
        rks.append(1.)
        return torch.tensor(rks, device=model_prev_list[-1].device), D1s

    def multistep_uni_pc_vary_update(self, x, model_prev_list, t_prev_list, t, order, use_corrector=True):
        ns = self.noise_schedule
        assert order <= len(model_prev_list)
        t_prev_0, model_prev_0 = t_prev_list[-1], model_prev_list[-1]
        lambda_prev_0, lambda_t = ns.marginal_lambda(t_prev_0), ns.marginal_lambda(t)
        sigma_prev_0, sigma_t = ns.marginal_std(t_prev_0), ns.marginal_std(t)
        alpha_t = torch.exp(ns.marginal_log_mean_coeff(t))
        h = lambda_t - lambda_prev_0
        rks, D1s = self._differences(model_prev_list, t_prev_list, h, order, lambda_prev_0, first_only=False)
        K = len(rks)

        columns, col = [], torch.ones_like(rks)  # C[i, k] = rks_i^k / (k + 1)!
        for k in range(1, K + 1):
            columns.append(col)
            col = col * rks / (k + 1)
        C = torch.stack(columns, dim=1)
        if len(D1s) > 0:
            D1s = torch.stack(D1s, dim=1)
            A_p = torch.linalg.inv(C[:-1, :-1])
        if use_corrector:
            A_c = torch.linalg.inv(C)

        hh = -h if self.predict_x0 else h
        h_phi_1 = torch.expm1(hh)
        h_phi_ks, h_phi_k, factorial = [], h_phi_1, 1
        for k in range(1, K + 2):
            h_phi_ks.append(h_phi_k)
            h_phi_k = h_phi_k / hh - 1 / factorial
            factorial *= k + 1

        model_t = None
        x_t_ = sigma_t / sigma_prev_0 * x - alpha_t * h_phi_1 * model_prev_0
        x_t = x_t_  # the predictor: at order 1 this is x_t_ itself
        if len(D1s) > 0:
            for k in range(K - 1):
                x_t = x_t - alpha_t * h_phi_ks[k + 1] * torch.einsum("bkchw,k->bchw", D1s, A_p[k])
        if use_corrector:
            model_t = self.model_fn(x_t, t)
            D1_t = model_t - model_prev_0
            x_t = x_t_
            k = 0
            for k in range(K - 1):
                x_t = x_t - alpha_t * h_phi_ks[k + 1] * torch.einsum("bkchw,k->bchw", D1s, A_c[k][:-1])
            x_t = x_t - alpha_t * h_phi_ks[K] * (D1_t * A_c[k][-1])
        return x_t, model_t

    def multistep_uni_pc_bh_update(self, x, model_prev_list, t_prev_list, t, order, x_t=None, use_corrector=True):
        ns = self.noise_schedule
        assert order <= len(model_prev_list)
        dims = x.dim()
        t_prev_0, model_prev_0 = t_prev_list[-1], model_prev_list[-1]
        lambda_prev_0, lambda_t = ns.marginal_lambda(t_prev_0), ns.marginal_lambda(t)
        sigma_prev_0, sigma_t = ns.marginal_std(t_prev_0), ns.marginal_std(t)
        alpha_t = torch.exp(ns.marginal_log_mean_coeff(t))
        h = lambda_t - lambda_prev_0
        rks, D1s = self._differences(model_prev_list, t_prev_list, h, order, lambda_prev_0, first_only=True)

        hh = -h[0] if self.predict_x0 else h[0]
        h_phi_1 = torch.expm1(hh)  # h phi_1(h) = e^h - 1
        h_phi_k = h_phi_1 / hh - 1
        if self.variant == "bh1":
            B_h = hh
        elif self.variant == "bh2":
            B_h = torch.expm1(hh)
        else:
            raise NotImplementedError()
        R, b, factorial = [], [], 1
        for i in range(1, order + 1):
            R.append(torch.pow(rks, i - 1))
            b.append(h_phi_k * factorial / B_h)
            factorial *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial
        R = torch.stack(R)
        b = torch.tensor(b, device=x.device)

        use_predictor = len(D1s) > 0 and x_t is None
        if len(D1s) > 0:
            D1s = torch.stack(D1s, dim=1)
            if x_t is None:
                rhos_p = torch.tensor([0.5], device=b.device) if order == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1])
        else:
            D1s = None
        if use_corrector:
            rhos_c = torch.tensor([0.5], device=b.device) if order == 1 else torch.linalg.solve(R, b)

        model_t = None
        x_t_ = expand_dims(sigma_t / sigma_prev_0, dims) * x - expand_dims(alpha_t * h_phi_1, dims) * model_prev_0
        if x_t is None:
            pred_res = torch.einsum("k,bkchw->bchw", rhos_p, D1s) if use_predictor else 0
            x_t = x_t_ - expand_dims(alpha_t * B_h, dims) * pred_res
        if use_corrector:
            model_t = self.model_fn(x_t, t)
            corr_res = torch.einsum("k,bkchw->bchw", rhos_c[:-1], D1s) if D1s is not None else 0
            D1_t = model_t - model_prev_0
            x_t = x_t_ - expand_dims(alpha_t * B_h, dims) * (corr_res + rhos_c[-1] * D1_t)
        return x_t, model_t

    def sample(self, x, steps=20, t_start=None, t_end=None, order=3, skip_type="time_uniform", method="singlestep",
               lower_order_final=True, denoise_to_zero=False, solver_type="dpm_solver", atol=0.0078, rtol=0.05,
               corrector=False):
        t_0 = 1. / self.noise_schedule.total_N if t_end is None else t_end
        t_T = self.noise_schedule.T if t_start is None else t_start
        if method != "multistep":
            raise NotImplementedError()
        assert steps >= order, "UniPC order must be < sampling steps"
        timesteps = self.get_time_steps(skip_type=skip_type, t_T=t_T, t_0=t_0, N=steps, device=x.device)
        assert timesteps.shape[0] - 1 == steps
        with torch.no_grad():
            vec_t = timesteps[0].expand((x.shape[0]))
            model_prev_list = [self.model_fn(x, vec_t)]
            t_prev_list = [vec_t]
            for init_order in range(1, order):  # warm up with the orders the history allows
                vec_t = timesteps[init_order].expand(x.shape[0])
                x, model_x = self.multistep_uni_pc_update(x, model_prev_list, t_prev_list, vec_t, init_order, use_corrector=True)
                if model_x is None:
                    model_x = self.model_fn(x, vec_t)
                if self.after_update is not None:
                    self.after_update(x, model_x)
                model_prev_list.append(model_x)
                t_prev_list.append(vec_t)
            for step in range(order, steps + 1):
                vec_t = timesteps[step].expand(x.shape[0])
                step_order = min(order, steps + 1 - step) if lower_order_final else order
                use_corrector = step != steps  # the last step runs no corrector (it needs no model value)
                x, model_x = self.multistep_uni_pc_update(x, model_prev_list, t_prev_list, vec_t, step_order, use_corrector=use_corrector)
                if self.after_update is not None:
                    self.after_update(x, model_x)
                for i in range(order - 1):
                    t_prev_list[i] = t_prev_list[i + 1]
                    model_prev_list[i] = model_prev_list[i + 1]
                t_prev_list[-1] = vec_t
                if step < steps:
                    if model_x is None:
                        model_x = self.model_fn(x, vec_t)
                    model_prev_list[-1] = model_x
        if denoise_to_zero:
            x = self.data_prediction_fn(x, torch.ones((x.shape[0],)).to(x.device) * t_0)
        return x
