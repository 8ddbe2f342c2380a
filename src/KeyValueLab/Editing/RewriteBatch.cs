using KeyValueLab.Inference;
using KeyValueLab.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Editing;

/// <summary>
/// Prompts with targets (teacher-forced NLL rows) and prompts without (KL rows), right-padded into one
/// batch, with a one-hot of each row's lookup position so an edit vector can be added there. The tensors
/// are detached and owned by the batch, so one batch serves every step of an optimisation; they are on the model's device.
/// </summary>
internal sealed class RewriteBatch : IDisposable
{
    private readonly List<Tensor> _owned = [];

    public RewriteBatch(IReadOnlyList<EditPrompt> targetRows, IReadOnlyList<EditPrompt> klRows, int padId, Device device)
    {
        if (targetRows.Count == 0) throw new ArgumentException("at least one prompt with a target is needed", nameof(targetRows));
        var rows = targetRows.Concat(klRows).ToList();
        // The last target token is never an input: position p-1+j predicts target token j.
        var sequences = rows.Select(r => (IReadOnlyList<int>)[.. r.PromptIds, .. r.TargetIds.Length > 0 ? r.TargetIds[..^1] : []]).ToArray();
        using var scope = NewDisposeScope();
        using var batch = TokenBatch.RightPadded(sequences, padId, device);
        int b = rows.Count, t = batch.Width;
        var lookup = new float[b * t];
        var targets = new long[b * t];
        var weights = new float[b * t];
        for (int r = 0; r < b; r++)
        {
            var row = rows[r];
            lookup[r * t + row.LookupIndex] = 1;
            int p = row.PromptIds.Length;
            for (int j = 0; j < row.TargetIds.Length; j++)
            {
                targets[r * t + p - 1 + j] = row.TargetIds[j];
                weights[r * t + p - 1 + j] = 1f / row.TargetIds.Length / targetRows.Count;
            }
        }
        InputIds = Keep(batch.InputIds);
        AttentionMask = Keep(batch.AttentionMask);
        PositionIds = Keep(batch.PositionIds);
        Lookup = Keep(tensor(lookup, [b, t, 1], device: device));
        Targets = Keep(tensor(targets, [b, t, 1], device: device));
        Weights = Keep(tensor(weights, [b, t], device: device));
        KlRowIndex = Keep(tensor(Enumerable.Range(targetRows.Count, klRows.Count).Select(i => (long)i).ToArray(), device: device));
        KlPosIndex = Keep(tensor(klRows.Select(k => (long)k.LookupIndex).ToArray(), device: device));
        KlRows = klRows.Count;
        FirstLookup = targetRows[0].LookupIndex;
    }

    public Tensor InputIds { get; }
    public Tensor AttentionMask { get; }
    public Tensor PositionIds { get; }

    /// <summary><c>[B, T, 1]</c>: 1 at each row's lookup position.</summary>
    public Tensor Lookup { get; }

    public int KlRows { get; }

    /// <summary>Lookup index of the first target row (ROME takes the initial vector there).</summary>
    public int FirstLookup { get; }

    private Tensor Targets { get; }
    private Tensor Weights { get; }
    private Tensor KlRowIndex { get; }
    private Tensor KlPosIndex { get; }

    public Tensor Forward(CausalLM model) => model.Forward(InputIds, AttentionMask, PositionIds);

    /// <summary>Mean over target rows of each row's mean NLL of its target tokens (scalar).</summary>
    public Tensor Nll(Tensor logits)
    {
        var logProbs = logits.gather(-1, Targets).squeeze(-1) - MetaDevice.LogSumExp(logits, -1);  // [B, T]
        return -(logProbs * Weights).sum();
    }

    /// <summary>Log-probabilities <c>[K, V]</c> of the next token at the KL rows' lookup positions.</summary>
    public Tensor KlLogProbs(Tensor logits) =>
        nn.functional.log_softmax(logits.index(KlRowIndex, KlPosIndex), -1);

    private Tensor Keep(Tensor t)
    {
        var kept = t.detach().clone().DetachFromDisposeScope();
        _owned.Add(kept);
        return kept;
    }

    public void Dispose()
    {
        foreach (var t in _owned) t.Dispose();
        _owned.Clear();
    }
}
