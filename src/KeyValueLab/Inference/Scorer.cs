using KeyValueLab.Models;
using KeyValueLab.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Inference;

/// <summary>
/// Teacher-forced score of one target continuation after a prompt (SPEC §3):
/// <c>L = −(1/m) Σ_j log P(o_j | prompt ⊕ o_&lt;j)</c> over the m target tokens.
/// </summary>
/// <param name="PromptIds">The prompt's ids as fed, BOS included when one was added.</param>
/// <param name="TargetIds">The target's ids o_1..o_m.</param>
/// <param name="TokenLogProbs">log P(o_j | prefix) for each target token (natural log).</param>
/// <param name="ArgmaxIds">The model's most likely token at each target position (teacher-forced).</param>
public sealed record ContinuationScore(int[] PromptIds, int[] TargetIds, float[] TokenLogProbs, int[] ArgmaxIds)
{
    /// <summary>Mean negative log-likelihood per target token, L(p, o).</summary>
    public double Loss => -TokenLogProbs.Select(x => (double)x).Average();

    /// <summary>exp(−L): the geometric-mean token probability, as ROME's magnitude metrics use it.</summary>
    public double MeanTokenProbability => Math.Exp(-Loss);

    /// <summary>Every target token is the argmax (MEMIT-style exact match).</summary>
    public bool ExactMatch => TargetIds.AsSpan().SequenceEqual(ArgmaxIds);

    /// <summary>Share of target tokens that are the argmax (EasyEdit-style token accuracy).</summary>
    public double TokenAccuracy => TargetIds.Zip(ArgmaxIds).Count(p => p.First == p.Second) / (double)TargetIds.Length;
}

/// <summary>
/// Teacher-forced scoring of continuations, batched with right padding so that each row's
/// positions are 0..len-1 exactly as when scored alone.
/// </summary>
public static class Scorer
{
    /// <summary>
    /// Scores each (prompt, target): ids = [BOS] ⊕ tokenize(prompt) ⊕ tokenize(<paramref name="targetPrefix"/> + target),
    /// prompt and target tokenised separately as ROME does. <paramref name="addBos"/> defaults to
    /// <see cref="PromptEncoding.UsesBos"/> (Llama yes, GPT-2/GPT-J no). <paramref name="targetPrefix"/>
    /// defaults to " ", or to "" for tokenizers that add their own dummy-prefix space (SentencePiece,
    /// llama2.c), where " Paris" would encode as a lone "▁" then "▁Paris"; see <see cref="PromptEncoding.EncodeTarget"/>.
    /// </summary>
    public static IReadOnlyList<ContinuationScore> Score(
        CausalLM model, ITokenizer tokenizer, IReadOnlyList<(string Prompt, string Target)> items,
        int batchSize = 16, bool? addBos = null, string? targetPrefix = null)
    {
        ArgumentNullException.ThrowIfNull(items);
        var encoded = new (IReadOnlyList<int> Prompt, IReadOnlyList<int> Target)[items.Count];
        for (int i = 0; i < items.Count; i++)
        {
            var (prompt, target) = items[i];
            encoded[i] = (PromptEncoding.Encode(model, tokenizer, prompt, addBos), PromptEncoding.EncodeTarget(tokenizer, target, targetPrefix));
        }
        int padId = tokenizer.EosId ?? 0;
        return ScoreIds(model, encoded, batchSize, padId);
    }

    /// <summary>Scores already tokenised (prompt, target) pairs; see <see cref="Score"/>.</summary>
    public static IReadOnlyList<ContinuationScore> ScoreIds(
        CausalLM model, IReadOnlyList<(IReadOnlyList<int> Prompt, IReadOnlyList<int> Target)> items,
        int batchSize = 16, int padId = 0)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(items);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        for (int i = 0; i < items.Count; i++)
        {
            var (p, t) = items[i];
            if (p.Count == 0) throw new ArgumentException($"item {i}: the prompt has no tokens, so nothing predicts the first target token (add BOS?)", nameof(items));
            if (t.Count == 0) throw new ArgumentException($"item {i}: the target has no tokens", nameof(items));
            if (p.Count + t.Count > model.Config.MaxPositions)
                throw new ArgumentException($"item {i}: {p.Count + t.Count} tokens exceed the model's {model.Config.MaxPositions} positions", nameof(items));
        }

        // Longest first, so rows of a batch have similar lengths; results go back in input order.
        int[] order = [.. Enumerable.Range(0, items.Count).OrderByDescending(i => items[i].Prompt.Count + items[i].Target.Count)];
        var results = new ContinuationScore[items.Count];
        using var noGrad = torch.no_grad();
        for (int start = 0; start < order.Length; start += batchSize)
        {
            using var scope = torch.NewDisposeScope();
            int[] rows = order[start..Math.Min(order.Length, start + batchSize)];
            var batchItems = rows.Select(i => items[i]).ToArray();
            var scored = ScoreBatch(model, batchItems, padId);
            for (int r = 0; r < rows.Length; r++) results[rows[r]] = scored[r];
        }
        return results;
    }

    private static ContinuationScore[] ScoreBatch(CausalLM model, (IReadOnlyList<int> Prompt, IReadOnlyList<int> Target)[] items, int padId)
    {
        var sequences = items.Select(it => (IReadOnlyList<int>)[.. it.Prompt, .. it.Target]).ToArray();
        using var batch = TokenBatch.RightPadded(sequences, padId);
        int b = items.Length, t = batch.Width;

        // Position c predicts the token at c+1: targets[r, c] = ids[r, c+1] where that token is a target token.
        var targets = new long[b * t];
        for (int r = 0; r < b; r++)
        {
            int p = items[r].Prompt.Count;
            for (int j = 0; j < items[r].Target.Count; j++) targets[r * t + p - 1 + j] = items[r].Target[j];
        }

        var logits = model.Forward(batch.InputIds, batch.AttentionMask, batch.PositionIds);       // [B, T, V]
        var targetTensor = tensor(targets, [b, t, 1], dtype: ScalarType.Int64);
        // log P = logit − logsumexp: no second [B, T, V] tensor, which matters at GPT-2's 50k vocabulary.
        var logProbs = logits.gather(-1, targetTensor).squeeze(-1) - logits.logsumexp(-1);          // [B, T]
        float[] lp = logProbs.to(ScalarType.Float32).data<float>().ToArray();
        long[] am = logits.argmax(-1).data<long>().ToArray();                                    // [B, T]

        var scores = new ContinuationScore[b];
        for (int r = 0; r < b; r++)
        {
            int p = items[r].Prompt.Count, m = items[r].Target.Count;
            var tokenLp = new float[m];
            var argmax = new int[m];
            for (int j = 0; j < m; j++)
            {
                tokenLp[j] = lp[r * t + p - 1 + j];
                argmax[j] = (int)am[r * t + p - 1 + j];
            }
            scores[r] = new ContinuationScore([.. items[r].Prompt], [.. items[r].Target], tokenLp, argmax);
        }
        return scores;
    }
}
