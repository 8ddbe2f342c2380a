namespace KeyValueLab.Editing;

/// <summary>
/// One fact to insert: <c>Prompt</c> with "{}" where the subject goes (ROME's requested_rewrite), the
/// subject, the new object and the true (old) object. <see cref="TargetTrue"/> may be null (zsRE has no
/// "old" object the metrics compare against).
/// </summary>
public sealed record EditRequest(string CaseId, string Prompt, string Subject, string TargetNew, string? TargetTrue)
{
    /// <summary>The rewrite prompt with the subject filled in.</summary>
    public string FilledPrompt => Prompt.Replace("{}", Subject, StringComparison.Ordinal);
}

/// <summary>A prompt and the object expected after it (zsRE specificity, EasyEdit locality).</summary>
public sealed record PromptTarget(string Prompt, string Target);

/// <summary>Which schema a dataset file follows.</summary>
public enum EditDatasetFormat
{
    /// <summary>ROME/MEMIT CounterFact: requested_rewrite, paraphrase/neighborhood/generation prompts.</summary>
    CounterFact,

    /// <summary>EasyEdit's flat CounterFact: prompt, subject, target_new, ground_truth, rephrase_prompt, locality_prompt.</summary>
    CounterFactEasyEdit,

    /// <summary>zsRE in MEND's format: subject, src, rephrase, alt, answers, loc, loc_ans.</summary>
    Zsre,
}

/// <summary>
/// One evaluation case: the edit plus every prompt its metrics use (SPEC §3). Lists a format does not
/// have are empty.
/// </summary>
public sealed record EditCase(
    EditRequest Request,
    EditDatasetFormat Format,
    IReadOnlyList<string> ParaphrasePrompts,
    IReadOnlyList<string> NeighborhoodPrompts,
    IReadOnlyList<string> GenerationPrompts,
    IReadOnlyList<PromptTarget> Locality)
{
    public string CaseId => Request.CaseId;
}
