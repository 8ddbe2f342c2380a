using KeyValueLab.Editing;

namespace KeyValueLab.Evaluation;

/// <summary>
/// Teacher-forced scores of one prompt (SPEC §3): L(p, o_new) and L(p, o_true) (mean per-token NLL), whether
/// every token of each object is the argmax (MEMIT exact match), and the argmax tokens at o_new's positions.
/// </summary>
public sealed record PromptScore(string Prompt, double LossNew, double? LossTrue, bool ExactNew, bool? ExactTrue, double TokenAccuracyNew, int[] ArgmaxNew);

/// <summary>A prompt scored against its own expected object (zsRE specificity, EasyEdit locality).</summary>
public sealed record LocalityScore(string Prompt, string Target, double Loss, double TokenAccuracy, int[] Argmax);

/// <summary>One sampled generation and its n-gram entropy.</summary>
public sealed record GenerationScore(string Prompt, string Text, double Entropy);

/// <summary>Every per-prompt score of one case at one moment (before or after the edit).</summary>
public sealed record CaseScores(
    IReadOnlyList<PromptScore> Rewrite,
    IReadOnlyList<PromptScore> Paraphrase,
    IReadOnlyList<PromptScore> Neighborhood,
    IReadOnlyList<LocalityScore> Locality,
    IReadOnlyList<GenerationScore> Generation);

/// <summary>
/// Case-level metrics, each a mean over the case's prompts (×100 for the scores), exactly as SPEC §3:
/// ES/EM on the rewrite prompt, PS/PM on paraphrases, NS/NM on neighbourhood prompts, exact-match rates,
/// GE. zsRE cases (no true object) get efficacy/paraphrase/specificity token accuracies instead.
/// Metrics a case cannot have are null.
/// </summary>
public sealed record CaseMetrics
{
    public double? ES { get; init; }
    public double? EM { get; init; }
    public double? PS { get; init; }
    public double? PM { get; init; }
    public double? NS { get; init; }
    public double? NM { get; init; }
    /// <summary>MEMIT-style exact match of o_new on the rewrite prompt, on paraphrases, and of o_true on neighbours.</summary>
    public double? RewriteExact { get; init; }
    public double? ParaphraseExact { get; init; }
    public double? NeighborhoodExact { get; init; }
    public double? GE { get; init; }
    /// <summary>zsRE: teacher-forced top-1 token accuracy of the new object on src, on rephrase, of loc_ans on loc.</summary>
    public double? ZsreEfficacy { get; init; }
    public double? ZsreParaphrase { get; init; }
    public double? ZsreSpecificity { get; init; }

    public static CaseMetrics From(CaseScores s, EditDatasetFormat format)
    {
        static double? Mean<T>(IReadOnlyList<T> xs, Func<T, double> f) => xs.Count == 0 ? null : 100 * xs.Average(f);
        static double? MeanRaw<T>(IReadOnlyList<T> xs, Func<T, double> f) => xs.Count == 0 ? null : xs.Average(f);
        if (format == EditDatasetFormat.Zsre)
            return new CaseMetrics
            {
                ZsreEfficacy = Mean(s.Rewrite, p => p.TokenAccuracyNew),
                ZsreParaphrase = Mean(s.Paraphrase, p => p.TokenAccuracyNew),
                ZsreSpecificity = Mean(s.Locality, p => p.TokenAccuracy),
                RewriteExact = Mean(s.Rewrite, p => p.ExactNew ? 1 : 0),
                ParaphraseExact = Mean(s.Paraphrase, p => p.ExactNew ? 1 : 0),
                GE = MeanRaw(s.Generation, g => g.Entropy),
            };
        return new CaseMetrics
        {
            ES = Mean(s.Rewrite, p => p.LossTrue!.Value > p.LossNew ? 1 : 0),
            EM = Mean(s.Rewrite, p => Math.Exp(-p.LossNew) - Math.Exp(-p.LossTrue!.Value)),
            PS = Mean(s.Paraphrase, p => p.LossTrue!.Value > p.LossNew ? 1 : 0),
            PM = Mean(s.Paraphrase, p => Math.Exp(-p.LossNew) - Math.Exp(-p.LossTrue!.Value)),
            NS = Mean(s.Neighborhood, p => p.LossTrue!.Value < p.LossNew ? 1 : 0),
            NM = Mean(s.Neighborhood, p => Math.Exp(-p.LossTrue!.Value) - Math.Exp(-p.LossNew)),
            RewriteExact = Mean(s.Rewrite, p => p.ExactNew ? 1 : 0),
            ParaphraseExact = Mean(s.Paraphrase, p => p.ExactNew ? 1 : 0),
            NeighborhoodExact = Mean(s.Neighborhood, p => p.ExactTrue == true ? 1 : 0),
            GE = MeanRaw(s.Generation, g => g.Entropy),
        };
    }
}

/// <summary>L(p, o_new) and L(p, o_true) of one prompt (mean per-token NLL; <see cref="True"/> null on zsRE).</summary>
public sealed record PromptLoss(double New, double? True);

/// <summary>
/// The per-prompt losses behind ES/PS/NS (rewrite, paraphrase and neighbourhood prompts, in the case's order), kept
/// with each stored unit so that the metrics can be recomputed from the store: ES = 100·mean(L_true &gt; L_new) over
/// <see cref="Rewrite"/>, PS the same over <see cref="Paraphrase"/>, NS = 100·mean(L_true &lt; L_new) over <see cref="Neighborhood"/>.
/// </summary>
public sealed record CaseLosses(IReadOnlyList<PromptLoss> Rewrite, IReadOnlyList<PromptLoss> Paraphrase, IReadOnlyList<PromptLoss> Neighborhood)
{
    public static CaseLosses From(CaseScores s)
    {
        static IReadOnlyList<PromptLoss> Of(IReadOnlyList<PromptScore> prompts) => [.. prompts.Select(p => new PromptLoss(p.LossNew, p.LossTrue))];
        return new CaseLosses(Of(s.Rewrite), Of(s.Paraphrase), Of(s.Neighborhood));
    }
}

/// <summary>
/// EasyEdit's numbers, kept apart because they differ from ROME's (SPEC §3): reliability and generalisation
/// are teacher-forced token accuracies of the new object; locality is the share of argmax tokens at the
/// locality targets' positions that the edit left unchanged.
/// </summary>
public sealed record EasyEditView(double Reliability, double? Generalization, double? Locality)
{
    public static EasyEditView From(CaseScores pre, CaseScores post)
    {
        double reliability = 100 * post.Rewrite.Average(p => p.TokenAccuracyNew);
        double? generalization = post.Paraphrase.Count == 0 ? null : 100 * post.Paraphrase.Average(p => p.TokenAccuracyNew);
        double? locality = null;
        if (post.Locality.Count > 0)
            locality = 100 * pre.Locality.Zip(post.Locality).Average(x =>
                x.First.Argmax.Zip(x.Second.Argmax).Count(t => t.First == t.Second) / (double)Math.Max(1, x.First.Argmax.Length));
        return new EasyEditView(reliability, generalization, locality);
    }
}

/// <summary>The edit itself: wall time, weights changed, optimisation steps and final loss.</summary>
public sealed record EditCost(double Seconds, long ParametersChanged, int Steps, double FinalLoss, int EditsApplied);

/// <summary>What one case's file holds: the request, every score before and after, the metrics, the cost and the generation-based scores (null when not taken).</summary>
public sealed record CaseResult(
    string CaseId, EditRequest Request, CaseScores Pre, CaseScores Post, CaseMetrics PreMetrics, CaseMetrics PostMetrics,
    EasyEditView EasyEdit, EditCost Edit, GenerationMetrics? Generation = null);
