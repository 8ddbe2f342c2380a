using KeyValueLab.Inference;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;

namespace KeyValueLab.Study;

/// <summary>
/// What the plan can check before any unit runs, so that a run does not stop midway at the same unit every time it is
/// resumed: every prompt an editing or lifelong unit scores, with its longest target, must fit the model's positions (a 307-token
/// prompt once passed the plan and stopped a run at its unit: "307 tokens exceed the model's 64 positions").
/// </summary>
public static class StudyPreflight
{
    /// <summary>Throws an <see cref="InputException"/> naming the edit data, the case and the prompt that cannot fit.</summary>
    public static void Check(StudyPlan plan, Func<ITokenizer> tokenizer)
    {
        var cases = plan.Groups.Where(g => g.Kind is UnitKind.Edit or UnitKind.Lifelong).SelectMany(g => g.Cases).DistinctBy(c => c.CaseId).ToList();
        if (cases.Count == 0) return;
        var tok = tokenizer();
        int positions = plan.Config.MaxPositions;
        bool bos = Architectures.Of(plan.Config.ModelType).PromptBos && tok.BosId is not null;
        string file = plan.Inputs.EditDataPath ?? "edit data";
        foreach (var c in cases)
        {
            var r = c.Request;
            int target = Math.Max(PromptEncoding.EncodeTarget(tok, r.TargetNew).Length, r.TargetTrue is null ? 0 : PromptEncoding.EncodeTarget(tok, r.TargetTrue).Length);
            void Fits(string what, string prompt, int targetTokens)
            {
                int n = tok.Encode(prompt, bos).Count + targetTokens;
                if (n > positions)
                    throw new InputException(file, $"case {c.CaseId}: its {what} is {n} tokens with its target, more than the model's {positions} positions; drop the case or use a model with a longer context");
            }
            Fits("rewrite prompt", r.FilledPrompt, target);
            foreach (string p in c.ParaphrasePrompts) Fits("paraphrase prompt", p, target);
            foreach (string p in c.NeighborhoodPrompts) Fits("neighbourhood prompt", p, target);
            foreach (var l in c.Locality) Fits("locality prompt", l.Prompt, PromptEncoding.EncodeTarget(tok, l.Target).Length);
        }
    }
}
