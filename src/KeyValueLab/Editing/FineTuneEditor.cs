using KeyValueLab.Memory;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace KeyValueLab.Editing;

/// <summary>
/// FT, the paper's back-propagation update (SPEC §4): Adam on the chosen FFN matrices (keys, values or both)
/// of the chosen layers, for at most <c>steps</c> steps, stopping before a step once the loss is below
/// <c>early_stop_loss</c>; with <c>norm_constraint</c> ε every weight is clamped to [w₀−ε, w₀+ε] after each
/// step (FT+L). Objectives: <c>target</c> = teacher-forced cross-entropy over the target tokens (default,
/// EasyEdit FT-M); <c>prompt_last</c> = every target token scored at the last prompt position (ROME's
/// original FT, EasyEdit FT-L; only right for one-token targets). Keys and values get the same budget.
/// </summary>
public sealed class FineTuneEditor : FineTuneEditorBase<FtHyperparameters>
{
    public FineTuneEditor(FtHyperparameters hp, EditScope? scope = null) : base(hp, scope)
    {
        if (hp.Steps < 1) throw new ArgumentException("steps must be at least 1");
    }

    public override EditReport Apply(CausalLM model, ITokenizer tokenizer, IReadOnlyList<EditRequest> requests)
    {
        var weights = Scope.Matrices(new FfnMemory(model)).Select(m => m.Weight).ToList();
        var rows = requests.Select(r => EditPrompts.Build(model, tokenizer, r.Prompt, r.Subject, r.TargetNew)).ToList();
        int padId = tokenizer.EosId ?? 0;
        using var frozen = new FrozenParameters(model, weights);
        using var originals = new DisposableList(Hp.NormConstraint is null ? [] : weights.Select(w => w.detach().clone().DetachFromDisposeScope()));
        using var batch = new RewriteBatch(rows, [], padId, model.Device);
        using var lastBatch = Hp.Objective is FtObjective.PromptLast ? new PromptLastBatch(rows, padId, model.Device) : null;
        using var adam = Tuning.AdamWOptimizer.Adam(weights, Hp.Lr, Hp.WeightDecay);  // held Scalars on this per-step path (see HeldScalars)
        using Scalar below = (-(Hp.NormConstraint ?? 0)).ToScalar(), above = (Hp.NormConstraint ?? 0).ToScalar();
        int steps = 0;
        double loss = double.NaN;
        for (int step = 0; step < Hp.Steps; step++)
        {
            using var scope = NewDisposeScope();
            var objective = lastBatch is null ? batch.Nll(batch.Forward(model)) : lastBatch.Loss(model);
            loss = MetaDevice.Read(objective);  // NaN on meta: the fixed number of steps
            if (loss < Hp.EarlyStopLoss) break;
            adam.ZeroGrad();
            objective.backward();
            adam.Step();
            steps++;
            if (Hp.NormConstraint is not null)
                using (no_grad())
                    for (int i = 0; i < weights.Count; i++)
                        weights[i].copy_(minimum(maximum(weights[i], originals[i].add(below, HeldScalars.One)), originals[i].add(above, HeldScalars.One)));
        }
        adam.ZeroGrad();  // released, not zeroed: a gradient kept after the edit is one more matrix resident (268 MB for GPT-J's fc_in)
        return new EditReport(steps, loss);
    }

    /// <summary>ROME's original objective: −mean_j log P(o_j | prompt), all at the last prompt position.</summary>
    private sealed class PromptLastBatch : IDisposable
    {
        private readonly Inference.TokenBatch _batch;
        private readonly Tensor _rows, _cols, _targets, _weights;

        public PromptLastBatch(IReadOnlyList<EditPrompt> rows, int padId, Device device)
        {
            using var scope = NewDisposeScope();
            _batch = Inference.TokenBatch.RightPadded([.. rows.Select(r => (IReadOnlyList<int>)r.PromptIds)], padId, device);
            var (ri, ci, ti, wi) = (new List<long>(), new List<long>(), new List<long>(), new List<float>());
            for (int r = 0; r < rows.Count; r++)
                foreach (int t in rows[r].TargetIds)
                {
                    ri.Add(r); ci.Add(rows[r].PromptIds.Length - 1); ti.Add(t); wi.Add(1f / rows[r].TargetIds.Length / rows.Count);
                }
            _rows = tensor(ri.ToArray(), device: device).DetachFromDisposeScope();
            _cols = tensor(ci.ToArray(), device: device).DetachFromDisposeScope();
            _targets = tensor(ti.ToArray(), device: device).DetachFromDisposeScope();
            _weights = tensor(wi.ToArray(), device: device).DetachFromDisposeScope();
            _batch.InputIds.DetachFromDisposeScope();
            _batch.AttentionMask.DetachFromDisposeScope();
            _batch.PositionIds.DetachFromDisposeScope();
        }

        public Tensor Loss(CausalLM model)
        {
            var logits = model.Forward(_batch.InputIds, _batch.AttentionMask, _batch.PositionIds);
            var logProbs = nn.functional.log_softmax(logits.index(_rows, _cols), -1);        // [N, V]
            return -(logProbs.gather(-1, _targets.unsqueeze(-1)).squeeze(-1) * _weights).sum();
        }

        public void Dispose()
        {
            _batch.Dispose();
            _rows.Dispose(); _cols.Dispose(); _targets.Dispose(); _weights.Dispose();
        }
    }
}

/// <summary>Tensors disposed together.</summary>
internal sealed class DisposableList(IEnumerable<Tensor> tensors) : IDisposable
{
    private readonly List<Tensor> _items = [.. tensors];
    public Tensor this[int i] => _items[i];
    public int Count => _items.Count;
    public void Dispose() { foreach (var t in _items) t.Dispose(); _items.Clear(); }
}
