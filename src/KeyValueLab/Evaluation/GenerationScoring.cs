using System.Text;
using KeyValueLab.Editing;
using KeyValueLab.Inference;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;

namespace KeyValueLab.Evaluation;

/// <summary>A case's greedy continuations at one moment: of the rewrite prompt, each paraphrase and each neighbourhood prompt.</summary>
public sealed record GenerationAnswers(IReadOnlyList<string> Rewrite, IReadOnlyList<string> Paraphrase, IReadOnlyList<string> Neighborhood);

/// <summary>
/// Generation-based scores of one case (×100; null when the case has no such prompts). <c>gen_es</c>/<c>gen_ps</c>:
/// share of rewrite/paraphrase prompts whose greedy continuation, normalised, starts with the new object;
/// <c>gen_ns</c>: share of neighbourhood prompts whose greedy continuation is the same after the edit as before it.
/// </summary>
public sealed record GenerationMetrics(double? GenES, double? GenPS, double? GenNS);

/// <summary>
/// Scoring by free greedy generation beside teacher forcing (SPEC §7: single-edit success fell from 96.8% to 38.5%
/// when scored this way). A continuation is as long as the new object's tokens plus <see cref="Margin"/> (the
/// neighbourhood's: the longer of the two objects plus the margin, the same before and after the edit).
/// </summary>
public sealed class GenerationScorer(CausalLM model, ITokenizer tokenizer, int margin = 3, int batchSize = 8)
{
    public int Margin { get; } = margin >= 0 ? margin : throw new ArgumentOutOfRangeException(nameof(margin));

    /// <summary>The greedy continuations of <paramref name="c"/>'s prompts on the model as it is now.</summary>
    public GenerationAnswers Generate(EditCase c)
    {
        var r = c.Request;
        int newLength = PromptEncoding.EncodeTarget(tokenizer, r.TargetNew).Length;
        int trueLength = r.TargetTrue is null ? 0 : PromptEncoding.EncodeTarget(tokenizer, r.TargetTrue).Length;
        var own = Generator.GreedyBatch(model, tokenizer, [r.FilledPrompt, .. c.ParaphrasePrompts], newLength + Margin, batchSize);
        var neighbours = c.NeighborhoodPrompts.Count == 0 ? []
            : Generator.GreedyBatch(model, tokenizer, c.NeighborhoodPrompts, Math.Max(newLength, trueLength) + Margin, batchSize);
        return new GenerationAnswers([own[0].Text], [.. own.Skip(1).Select(g => g.Text)], [.. neighbours.Select(g => g.Text)]);
    }

    /// <summary>The scores of a case from its continuations before and after the edit.</summary>
    public static GenerationMetrics Score(EditCase c, GenerationAnswers before, GenerationAnswers after)
    {
        static double? Share<T>(IReadOnlyList<T> xs, Func<T, int, bool> hit) =>
            xs.Count == 0 ? null : 100.0 * xs.Select((x, i) => hit(x, i) ? 1 : 0).Sum() / xs.Count;
        if (before.Neighborhood.Count != after.Neighborhood.Count) throw new ArgumentException("before and after must cover the same neighbourhood prompts");
        string target = c.Request.TargetNew;
        return new GenerationMetrics(
            Share(after.Rewrite, (t, _) => StartsWithObject(t, target)),
            Share(after.Paraphrase, (t, _) => StartsWithObject(t, target)),
            Share(after.Neighborhood, (t, i) => Normalise(t) == Normalise(before.Neighborhood[i])));
    }

    /// <summary>True when <paramref name="continuation"/>, normalised, is <paramref name="obj"/> or starts with it followed by a word break.</summary>
    public static bool StartsWithObject(string continuation, string obj)
    {
        string c = Normalise(continuation), o = Normalise(obj);
        return o.Length > 0 && (c == o || c.StartsWith(o + " ", StringComparison.Ordinal));
    }

    /// <summary>Lower case; every run of characters other than letters and digits becomes one space; trimmed.</summary>
    public static string Normalise(string text)
    {
        var sb = new StringBuilder(text.Length);
        bool space = false;
        foreach (char ch in text.Normalize(NormalizationForm.FormKC))
        {
            if (char.IsLetterOrDigit(ch)) { if (space && sb.Length > 0) sb.Append(' '); sb.Append(char.ToLowerInvariant(ch)); space = false; }
            else space = true;
        }
        return sb.ToString();
    }
}
