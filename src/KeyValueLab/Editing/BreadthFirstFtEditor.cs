using KeyValueLab.Memory;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;
using static TorchSharp.torch;

namespace KeyValueLab.Editing;

/// <summary>
/// Hyperparameters of breadth-first fine-tuning (LocFT-BF, Yang et al., "Fine-tuning Done Right in Model Editing",
/// arXiv 2509.22072; code ICT-STAR/LocFT <c>fine-tune.py</c>, <c>hparams/*.yaml</c>). Files in <c>hparams/FT-BF/</c>.
/// </summary>
public sealed record BreadthFirstFtHyperparameters : IFineTuneHyperparameters
{
    public string Method { get; init; } = "FT-BF";
    public string? ModelFamily { get; init; }
    public string? Source { get; init; }
    /// <summary>One layer (LocFT edits one module of one layer).</summary>
    public int[] Layers { get; init; } = [0];
    /// <summary>keys or values (LocFT's choice is the values, <c>down_proj</c>).</summary>
    public string Side { get; init; } = "values";
    /// <summary>Llama keys: gate, up or both (null = both).</summary>
    public string? KeyKinds { get; init; }
    /// <summary>Passes over the whole edit set (LocFT's <c>num_steps</c>: 25).</summary>
    public int Epochs { get; init; } = 25;
    /// <summary>Requests per Adam step (LocFT: 100).</summary>
    public int BatchSize { get; init; } = 100;
    public double Lr { get; init; } = 5e-4;
    public double WeightDecay { get; init; }
    /// <summary>A mini-batch whose loss is below this takes no step; an epoch whose mean loss is below it ends the run (LocFT: 1e-2).</summary>
    public double EarlyStopLoss { get; init; } = 1e-2;
    /// <summary>Train the target followed by the end-of-sequence token, as LocFT does (so the edited model stops after the new object).</summary>
    public bool AppendEos { get; init; } = true;
    /// <summary>Seed of the per-epoch shuffle of the requests (LocFT shuffles with Python's unseeded <c>random</c>).</summary>
    public int ShuffleSeed { get; init; } = 1;
}

/// <summary>
/// Breadth-first FT (LocFT-BF): instead of training each request to convergence before the next (the depth-first
/// pipeline of ROME's FT and <see cref="FineTuneEditor"/>), every <see cref="Apply"/> call runs <c>epochs</c> passes
/// over all the requests it is given, in shuffled mini-batches of <c>batch_size</c>, one Adam step per mini-batch
/// and one optimiser state for the whole call. The loss of a mini-batch is the mean over its requests of each
/// request's mean teacher-forced cross-entropy over its target tokens (LocFT's masked loss). The published method
/// edits <c>down_proj</c> (values) of one late layer; here it may edit the keys of that layer instead
/// (<c>up</c>/<c>gate</c>/<c>c_fc</c>/<c>fc_in</c>), which is this project's keys-versus-values comparison.
/// In a sequential run with chunks of B each chunk is one call, so the pipeline is breadth-first within a chunk;
/// LocFT's own setting (all edits at once) is one chunk of N.
/// </summary>
public sealed class BreadthFirstFtEditor : FineTuneEditorBase<BreadthFirstFtHyperparameters>
{
    public BreadthFirstFtEditor(BreadthFirstFtHyperparameters hp, EditScope? scope = null) : base(hp, scope)
    {
        if (hp.Epochs < 1) throw new ArgumentException("epochs must be at least 1");
        if (hp.BatchSize < 1) throw new ArgumentException("batch_size must be at least 1");
        if (Scope.Layers.Count != 1) throw new ArgumentException($"FT-BF edits one layer; got layers {string.Join(",", Scope.Layers)}");
        if (Scope.Side == EditSide.Both) throw new ArgumentException("FT-BF edits the keys or the values of one layer, not both");
    }

    public override EditReport Apply(CausalLM model, ITokenizer tokenizer, IReadOnlyList<EditRequest> requests)
    {
        if (requests.Count == 0) return new EditReport(0, double.NaN);
        var weights = Scope.Matrices(new FfnMemory(model)).Select(m => m.Weight).ToList();
        int padId = tokenizer.EosId ?? 0;
        int? eos = Hp.AppendEos ? tokenizer.EosId : null;
        var rows = requests.Select(r =>
        {
            var row = EditPrompts.Build(model, tokenizer, r.Prompt, r.Subject, r.TargetNew);
            return eos is int e ? row with { TargetIds = [.. row.TargetIds, e] } : row;
        }).ToArray();
        using var frozen = new FrozenParameters(model, weights);
        using var adam = Tuning.AdamWOptimizer.Adam(weights, Hp.Lr, Hp.WeightDecay);
        var order = Enumerable.Range(0, rows.Length).ToArray();
        var shuffle = new Random(Hp.ShuffleSeed);
        int steps = 0;
        double epochLoss = double.NaN;
        for (int epoch = 0; epoch < Hp.Epochs; epoch++)
        {
            shuffle.Shuffle(order);
            double sum = 0;
            foreach (var part in order.Chunk(Hp.BatchSize))
            {
                using var scope = NewDisposeScope();
                using var batch = new RewriteBatch([.. part.Select(i => rows[i])], [], padId, model.Device);
                var objective = batch.Nll(batch.Forward(model));
                double loss = MetaDevice.Read(objective);
                sum += loss * part.Length;
                if (loss < Hp.EarlyStopLoss) continue;
                adam.ZeroGrad();
                objective.backward();
                adam.Step();
                steps++;
            }
            epochLoss = sum / rows.Length;
            if (epochLoss < Hp.EarlyStopLoss) break;
        }
        foreach (var w in weights) w.grad?.zero_();
        return new EditReport(steps, epochLoss);
    }
}
