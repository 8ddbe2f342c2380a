using KeyValueLab.Editing;
using KeyValueLab.Inference;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;

namespace KeyValueLab.Evaluation;

/// <summary>How cases are scored.</summary>
public sealed record EvaluationOptions
{
    /// <summary>Generation prompts sampled per case for GE (SPEC §3: top-k 5, 100 tokens including the prompt); 0 = no GE.</summary>
    public int GenerationPrompts { get; init; } = 10;

    /// <summary>Tokens per generation, the prompt included.</summary>
    public int GenerationTokens { get; init; } = 100;

    /// <summary>Seed of generation i of a case is Seed + i, before and after the edit alike.</summary>
    public ulong Seed { get; init; } = 1;

    public int BatchSize { get; init; } = 16;
}

/// <summary>Scores one case's prompts on the model as it is now (SPEC §3).</summary>
public sealed class CaseEvaluator(CausalLM model, ITokenizer tokenizer, EvaluationOptions? options = null)
{
    public EvaluationOptions Options { get; } = options ?? new EvaluationOptions();

    public CaseScores Measure(EditCase c)
    {
        var r = c.Request;
        string rewrite = r.FilledPrompt;
        var prompts = new List<(string Prompt, int Group)> { (rewrite, 0) };
        prompts.AddRange(c.ParaphrasePrompts.Select(p => (p, 1)));
        prompts.AddRange(c.NeighborhoodPrompts.Select(p => (p, 2)));

        // One scoring call: every prompt with o_new and (when there is one) o_true, then the locality pairs.
        var items = new List<(string, string)>();
        foreach (var (p, _) in prompts)
        {
            items.Add((p, r.TargetNew));
            if (r.TargetTrue is not null) items.Add((p, r.TargetTrue));
        }
        int localityStart = items.Count;
        items.AddRange(c.Locality.Select(l => (l.Prompt, l.Target)));
        var scores = Scorer.Score(model, tokenizer, items, Options.BatchSize);

        var groups = new List<PromptScore>[] { [], [], [] };
        int k = 0;
        foreach (var (p, group) in prompts)
        {
            var sNew = scores[k++];
            var sTrue = r.TargetTrue is null ? null : scores[k++];
            groups[group].Add(new PromptScore(p, sNew.Loss, sTrue?.Loss, sNew.ExactMatch, sTrue?.ExactMatch, sNew.TokenAccuracy, sNew.ArgmaxIds));
        }
        var locality = c.Locality.Select((l, i) =>
        {
            var s = scores[localityStart + i];
            return new LocalityScore(l.Prompt, l.Target, s.Loss, s.TokenAccuracy, s.ArgmaxIds);
        }).ToList();

        var generation = new List<GenerationScore>();
        foreach (var (p, i) in c.GenerationPrompts.Take(Options.GenerationPrompts).Select((p, i) => (p, i)))
        {
            var options = new GenerationOptions
            {
                Steps = Options.GenerationTokens, Temperature = 1, TopK = 5, TopP = 1, Seed = Options.Seed + (ulong)i, StopAtEos = true,
            };
            string text = Generator.Generate(model, tokenizer, p, options).Text;
            generation.Add(new GenerationScore(p, text, GenerationEntropy.Of(text)));
        }
        return new CaseScores(groups[0], groups[1], groups[2], locality, generation);
    }
}
