using KeyValueLab.Inference;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;

namespace KeyValueLab.Editing;

/// <summary>A tokenised prompt, the target continuation scored after it (may be empty) and the position the edit looks up (the subject's last token).</summary>
public sealed record EditPrompt(int[] PromptIds, int[] TargetIds, int LookupIndex);

/// <summary>
/// How editors turn a request into token ids, the way ROME does: the prompt and the target are tokenised
/// separately (as <see cref="Scorer"/> does), and the subject's last token is the last token of
/// tokenize(text before "{}" + subject).
/// </summary>
public static class EditPrompts
{
    /// <summary>
    /// <paramref name="template"/> holds "{}" for the subject. Returns the ids of the filled prompt, the target's
    /// ids (none when <paramref name="target"/> is null) and the index of the subject's last token (or, with
    /// <paramref name="lookupLast"/>, of the prompt's last token: ROME/EasyEdit's fact_token "last").
    /// </summary>
    public static EditPrompt Build(CausalLM model, ITokenizer tokenizer, string template, string subject, string? target, bool lookupLast = false)
    {
        int at = template.IndexOf("{}", StringComparison.Ordinal);
        if (at < 0) throw new ArgumentException($"template \"{template}\" has no \"{{}}\" for the subject", nameof(template));
        string filled = template.Replace("{}", subject, StringComparison.Ordinal);
        int[] ids = PromptEncoding.Encode(model, tokenizer, filled);
        int[] upToSubject = PromptEncoding.Encode(model, tokenizer, template[..at] + subject);
        int lookup = lookupLast ? ids.Length - 1 : Math.Min(upToSubject.Length, ids.Length) - 1;
        if (lookup < 0) throw new ArgumentException($"the prompt \"{filled}\" has no tokens", nameof(template));
        int[] targetIds = target is null ? [] : PromptEncoding.EncodeTarget(tokenizer, target);
        if (target is not null && targetIds.Length == 0) throw new ArgumentException($"target \"{target}\" has no tokens", nameof(target));
        return new EditPrompt(ids, targetIds, lookup);
    }

    /// <summary>
    /// Context templates as ROME's get_context_templates: "{}" plus, for each (length, count), <c>count</c>
    /// texts the model samples itself (top-k 5, seeded) from "The", "Therefore", "Because", "I", "You",
    /// <c>length</c> tokens long, each followed by ". {}". Braces in generated text become spaces.
    /// </summary>
    public static IReadOnlyList<string> ContextTemplates(CausalLM model, ITokenizer tokenizer, int[][] lengthParams, ulong seed = 1)
    {
        string[] starts = ["The", "Therefore", "Because", "I", "You"];
        var templates = new List<string> { "{}" };
        ulong n = 0;
        foreach (var pair in lengthParams)
        {
            if (pair.Length != 2 || pair[0] < 1 || pair[1] < 0) throw new ArgumentException("context_template_length_params must be [length, count] pairs");
            int length = pair[0], count = pair[1];
            for (int i = 0; i < count; i++)
            {
                string start = starts[i % starts.Length];
                var options = new GenerationOptions { Steps = length, Temperature = 1, TopK = 5, TopP = 1, Seed = seed + n++, StopAtEos = true };
                string text = Generator.Generate(model, tokenizer, start, options).Text;
                text = text.Replace('{', ' ').Replace('}', ' ').ReplaceLineEndings(" ").Trim();
                templates.Add(text + ". {}");
            }
        }
        return templates;
    }
}
