using KeyValueLab.Inference;
using KeyValueLab.Models;
using KeyValueLab.Statistics;
using KeyValueLab.Tokenization;

namespace KeyValueLab.Tuning;

/// <summary>One evaluated example: the generated text (after the prompt) and, when computed, the most likely label.</summary>
public sealed record Prediction(TaskExample Example, string Generated, string? LikeliestLabel)
{
    /// <summary>The paper's metric: the trimmed generation equals the gold label.</summary>
    public bool ExactMatch => Generated.Trim() == Example.Label;
}

/// <summary>
/// Per-task scores. <see cref="Accuracy"/> and <see cref="MacroF1"/> are the paper's generation metrics (exact match of up to
/// 20 greedy tokens); <see cref="LabelLikelihoodAccuracy"/> is a separate, constrained metric: the label with the highest
/// log-likelihood after the prompt. The interval is Wilson's 95% score interval for the accuracy.
/// </summary>
public sealed record TaskMetrics(string Task, int Count, double Accuracy, double Low95, double High95, double MacroF1, double? LabelLikelihoodAccuracy);

/// <summary>Exact-match evaluation by batched greedy generation, as the paper's inference script.</summary>
public static class TaskEvaluator
{
    public const int MaxNewTokens = 20;

    /// <summary>Generates ≤ <paramref name="maxNewTokens"/> greedy tokens per example (stopping at EOS); optionally ranks the labels by likelihood.</summary>
    public static IReadOnlyList<Prediction> Predict(CausalLM model, ITokenizer tokenizer, IReadOnlyList<TaskExample> examples,
        IReadOnlyList<string>? labelsForLikelihood = null, int maxNewTokens = MaxNewTokens, int batchSize = 16)
    {
        int room = model.Config.MaxPositions - maxNewTokens;
        var prompts = examples.Select(e => LeftTruncate(PromptEncoding.Encode(model, tokenizer, e.Prompt), room)).ToArray();
        var stop = new List<int>();
        if (tokenizer.EosId is int eos) stop.Add(eos);
        var generated = Generator.GreedyBatchIds(model, prompts, maxNewTokens, stop, batchSize, tokenizer.EosId ?? 0);
        string?[] likeliest = new string?[examples.Count];
        if (labelsForLikelihood is { Count: > 0 })
            likeliest = LikeliestLabels(model, tokenizer, examples, labelsForLikelihood, batchSize);
        return [.. examples.Select((e, i) => new Prediction(e, tokenizer.Decode(generated[i]), likeliest[i]))];
    }

    /// <summary>The label whose tokens (after the prompt, tokenised as in training: prompt+label together) have the highest total log-probability.</summary>
    public static string?[] LikeliestLabels(CausalLM model, ITokenizer tokenizer, IReadOnlyList<TaskExample> examples, IReadOnlyList<string> labels, int batchSize = 16)
    {
        var items = new List<(IReadOnlyList<int> Prompt, IReadOnlyList<int> Target)>();
        foreach (var example in examples)
            foreach (string label in labels)
            {
                var candidate = example with { Label = label };
                var full = PromptEncoding.Encode(model, tokenizer, candidate.TrainingText);
                if (tokenizer.EosId is int eos) full = [.. full, eos];  // the label must also END there
                int start = Math.Max(1, SftTrainer.AnswerStart(model, tokenizer, candidate, full));
                int keep = Math.Min(full.Length, model.Config.MaxPositions);
                int drop = full.Length - keep;  // left-truncate long prompts
                items.Add((full[drop..Math.Max(drop + 1, start)], full[Math.Max(drop + 1, start)..]));
            }
        var scores = Scorer.ScoreIds(model, items, batchSize, tokenizer.EosId ?? 0);
        var result = new string?[examples.Count];
        for (int i = 0; i < examples.Count; i++)
        {
            int best = -1;
            double bestScore = double.NegativeInfinity;
            for (int l = 0; l < labels.Count; l++)
            {
                double total = scores[i * labels.Count + l].TokenLogProbs.Sum(x => (double)x);
                if (total > bestScore) (best, bestScore) = (l, total);
            }
            result[i] = best >= 0 ? labels[best] : null;
        }
        return result;
    }

    /// <summary>Accuracy (with a Wilson 95% interval), macro-F1 over the gold label set, and the label-likelihood accuracy when present.</summary>
    public static TaskMetrics Score(string task, IReadOnlyList<Prediction> predictions, IReadOnlyList<string> labels)
    {
        int n = predictions.Count;
        int correct = predictions.Count(p => p.ExactMatch);
        double acc = n > 0 ? (double)correct / n : 0;
        var (low, high) = Descriptive.Wilson(correct, n);
        double f1 = MacroF1(predictions.Select(p => (p.Example.Label, p.Generated.Trim())).ToList(), labels);
        double? likelihood = predictions.Count > 0 && predictions.All(p => p.LikeliestLabel is not null)
            ? predictions.Count(p => p.LikeliestLabel == p.Example.Label) / (double)n : null;
        return new TaskMetrics(task, n, acc, low, high, f1, likelihood);
    }

    /// <summary>Mean over the gold classes of F1 = 2PR/(P+R); predictions outside the label set count as wrong for every class.</summary>
    public static double MacroF1(IReadOnlyList<(string Gold, string Predicted)> pairs, IReadOnlyList<string> labels)
    {
        var classes = labels.Count > 0 ? labels : [.. pairs.Select(p => p.Gold).Distinct()];
        double sum = 0;
        foreach (string c in classes)
        {
            int tp = pairs.Count(p => p.Gold == c && p.Predicted == c);
            int fp = pairs.Count(p => p.Gold != c && p.Predicted == c);
            int fn = pairs.Count(p => p.Gold == c && p.Predicted != c);
            sum += tp == 0 ? 0 : 2.0 * tp / (2.0 * tp + fp + fn);
        }
        return classes.Count > 0 ? sum / classes.Count : 0;
    }

    private static int[] LeftTruncate(int[] ids, int room) => ids.Length <= room ? ids : ids[^Math.Max(1, room)..];
}
