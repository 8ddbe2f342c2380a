using KeyValueLab.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace KeyValueLab.Editing;

/// <summary>The vector an edit must make a hook point produce at the subject's last token.</summary>
/// <param name="Initial">The point's output at the lookup position of the first rewriting prompt, unedited <c>[dim]</c>.</param>
/// <param name="Delta">The optimised change δ <c>[dim]</c>; the target is <c>Initial + Delta</c>.</param>
public sealed record TargetVector(Tensor Initial, Tensor Delta) : IDisposable
{
    public Tensor Target => Initial + Delta;
    public void Dispose() { Initial.Dispose(); Delta.Dispose(); }
}

/// <summary>What the optimisation did.</summary>
public sealed record TargetOptimization(IReadOnlyList<TargetVector> Vectors, int Steps, double FinalLoss, double FinalNll) : IDisposable
{
    public void Dispose() { foreach (var v in Vectors) v.Dispose(); }
}

/// <summary>
/// ROME's compute_v, generalised to any set of hook points: find δ, added to each point's output at the
/// subject's last token of every prompt, that makes the model predict the new target. Loss = mean
/// teacher-forced NLL of the target over the rewriting prompts + kl_factor·KL(p_δ ‖ p_0) of the next token
/// after the KL prompts ("{} is a") at the subject's last token + weight_decay·‖δ‖/‖v₀‖²; Adam (v_lr),
/// at most v_num_grad_steps steps, stopping once the loss is below early_stop_loss; after each step
/// ‖δ‖ is clamped to clamp_norm_factor·‖v₀‖ (v₀ = the point's initial output).
/// </summary>
public static class TargetOptimizer
{
    public static TargetOptimization Optimize(
        CausalLM model, IReadOnlyList<HookPoint> points, IReadOnlyList<EditPrompt> rewriting, IReadOnlyList<EditPrompt> klPrompts,
        LocateEditHyperparameters hp, int padId)
    {
        using var batch = new RewriteBatch(rewriting, klPrompts, padId, model.Device);
        using var frozen = new FrozenParameters(model);
        var deltas = new Parameter?[points.Count];
        var initials = new Tensor?[points.Count];
        var hooks = new List<IDisposable>();
        Tensor? klInit = null;
        Tuning.AdamWOptimizer? adam = null;  // held Scalars on this per-step path (see HeldScalars)
        using Scalar klFactor = hp.KlFactor.ToScalar(), weightDecay = hp.VWeightDecay.ToScalar(), klRows = batch.KlRows.ToScalar();
        int steps = 0;
        double loss = double.NaN, nll = double.NaN;
        try
        {
            for (int i = 0; i < points.Count; i++)
            {
                int k = i;
                hooks.Add(points[i].Install((_, output) =>
                {
                    if (initials[k] is null)
                    {
                        initials[k] = output[0, batch.FirstLookup].detach().clone().DetachFromDisposeScope();
                        var delta = new Parameter(zeros(output.shape[^1]).DetachFromDisposeScope());
                        delta.DetachFromDisposeScope();
                        deltas[k] = delta;
                    }
                    return output.Plus(batch.Lookup * deltas[k]!);
                }));
            }
            for (int step = 0; step < Math.Max(1, hp.VNumGradSteps); step++)
            {
                using var scope = NewDisposeScope();
                var logits = batch.Forward(model);
                var nllLoss = batch.Nll(logits);
                var total = nllLoss;
                if (batch.KlRows > 0 && hp.KlFactor != 0)
                {
                    var current = batch.KlLogProbs(logits);
                    klInit ??= current.detach().clone().DetachFromDisposeScope();
                    var kl = (current.exp() * (current - klInit)).sum().div(klRows);   // KL(p_δ ‖ p_0), batch mean
                    total = total.Plus(kl.mul(klFactor));
                }
                for (int i = 0; i < points.Count; i++)
                {
                    var v0 = initials[i]!;
                    total = total.Plus((deltas[i]!.norm() / v0.norm().pow(HeldScalars.Two)).mul(weightDecay));
                }
                loss = total.item<float>();
                nll = nllLoss.item<float>();
                steps = step;
                if (loss < hp.EarlyStopLoss || step == hp.VNumGradSteps - 1) break;
                adam ??= Tuning.AdamWOptimizer.Adam(deltas.Select(d => d!), hp.VLr);
                adam.ZeroGrad();
                total.backward();
                adam.Step();
                steps = step + 1;
                using (no_grad())
                {
                    for (int i = 0; i < points.Count; i++)
                    {
                        double max = hp.ClampNormFactor * initials[i]!.norm().item<float>();
                        double norm = deltas[i]!.norm().item<float>();
                        if (norm > max)
                        {
                            using Scalar shrink = (max / norm).ToScalar();
                            deltas[i]!.mul_(shrink);
                        }
                    }
                }
            }
            var vectors = new List<TargetVector>();
            for (int i = 0; i < points.Count; i++)
                vectors.Add(new TargetVector(initials[i]!.clone().DetachFromDisposeScope(), deltas[i]!.detach().clone().DetachFromDisposeScope()));
            return new TargetOptimization(vectors, steps, loss, nll);
        }
        finally
        {
            foreach (var h in hooks) h.Dispose();
            adam?.Dispose();
            klInit?.Dispose();
            foreach (var t in initials) t?.Dispose();
            foreach (var d in deltas) d?.Dispose();
        }
    }
}
