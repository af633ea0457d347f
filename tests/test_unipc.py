"""UniPC under T-SAM, through the WebUI stand-in's UniPC (tests/a1111/modules/models/diffusion/
uni_pc/uni_pc.py, mirroring A1111 1.10.1): for every variant, order and option, each guided
step moves the latent UniPC continues from exactly once.

UniPC calls the model on a *predicted* latent and then builds the step's latent anew with its
corrector; whether the change T-SAM made in place to the predicted latent survives depends on
the variant and the order of the update. The check is independent of that: each update is done
again on copies of its inputs as they were, with the model value it really got, which is the
latent UniPC would continue from without T-SAM's move; the latent entering the next update must
be exactly that plus the move of that step, once.
"""

import pytest
import torch

from modules import shared
from modules.models.diffusion.uni_pc import uni_pc
from tsam_ext.core import controller
from tsam_ext.core.guidance import StepOutcome

STEPS = 8  # 1000 // 8 = 125: 8 timesteps, 8 UniPC steps

OPTIONS = [(variant, order, True, "time_uniform") for variant in ("bh1", "bh2", "vary_coeff") for order in (1, 2, 3)] + [
    ("vary_coeff", 3, False, "logSNR"), ("vary_coeff", 1, True, "time_quadratic"), ("bh2", 2, False, "time_quadratic"),
    ("bh1", 3, False, "logSNR")]


def record(monkeypatch):
    """Moves of a fake guidance step (distinct per step), and per UniPC update: the latent that
    entered it and the update redone on its unmoved inputs with the model value it got."""
    moves, updates, starts = {}, [], []
    real_guide, real_update, real_sample = controller.GuidedPass.guide, uni_pc.UniPC.multistep_uni_pc_update, uni_pc.UniPC.sample

    def step(z, rows, run_unet, recorder, alpha, **_):
        delta = 0.05 * torch.randn(z.shape, generator=torch.Generator().manual_seed(len(moves)))
        return StepOutcome(delta=delta, z=z + delta, losses={0: [1.0]}, passes=1)

    def guide(self, x, step_, rows, run_unet, c_in, movable=None):
        assert float(c_in.flatten()[0]) == 1.0  # UniPC's latent is the UNet's own
        out = real_guide(self, x, step_, rows, run_unet, c_in)
        moves[step_] = out.delta
        return out

    def update(self, x, model_prev_list, t_prev_list, t, order, **kwargs):
        entry, previous, times = x.clone(), [m.clone() for m in model_prev_list], list(t_prev_list)
        out, model_t = real_update(self, x, model_prev_list, t_prev_list, t, order, **kwargs)
        self.model_fn = lambda *_: model_t  # the same model value, on untouched copies
        try:
            again, _ = real_update(self, entry, previous, times, t, order, **kwargs)
        finally:
            del self.model_fn
        updates.append((entry, again))
        return out, model_t

    def sample(self, x, *args, **kwargs):
        starts.append(x.clone())
        return real_sample(self, x, *args, **kwargs)

    monkeypatch.setattr(controller, "guidance_step", step)
    monkeypatch.setattr(controller.GuidedPass, "guide", guide)
    monkeypatch.setattr(uni_pc.UniPC, "multistep_uni_pc_update", update)
    monkeypatch.setattr(uni_pc.UniPC, "sample", sample)
    return moves, updates, starts


@pytest.mark.parametrize("variant,order,lower_order_final,skip_type", OPTIONS,
                         ids=[f"{v}-order{o}-{'lof' if f else 'nolof'}-{s}" for v, o, f, s in OPTIONS])
def test_each_guided_step_moves_the_latent_unipc_continues_from_once(webui, monkeypatch, variant, order,
                                                                     lower_order_final, skip_type):
    for key, value in dict(uni_pc_variant=variant, uni_pc_order=order, uni_pc_lower_order_final=lower_order_final,
                           uni_pc_skip_type=skip_type).items():
        monkeypatch.setitem(shared.opts.data, key, value)
    moves, updates, starts = record(monkeypatch)
    _, res = webui.generate(tsam=dict(enabled=True, refine=False, guided_steps=100), prompt="a black car and a white clock",
                            seed=3, steps=STEPS, width=64, height=64, sampler_name="UniPC")
    assert sorted(moves) == list(range(STEPS)) and len(updates) == STEPS
    expected = starts[0] + moves[0]  # the first call sees the initial latent itself
    for u, (entry, again) in enumerate(updates, start=1):  # update u makes step u's latent
        torch.testing.assert_close(entry, expected, atol=1e-5, rtol=1e-5,
                                   msg=lambda m: f"the latent entering update {u} is not moved exactly once: {m}")
        expected = again + moves[u] if u in moves else again
    torch.testing.assert_close(res.latents[0], expected[0], atol=1e-5, rtol=1e-5)
