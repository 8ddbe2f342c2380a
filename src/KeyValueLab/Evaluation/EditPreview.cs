using System.Diagnostics;
using KeyValueLab.Editing;
using KeyValueLab.Inference;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Evaluation;

/// <summary>A next-token guess: the token's text and its probability.</summary>
public sealed record TokenGuess(string Token, double Probability);

/// <summary>One prompt before and after an edit: the top next tokens, and exp(−L) of the new and (when known) true objects.</summary>
public sealed record PromptPreview(string Label, string Text, IReadOnlyList<TokenGuess> Before, IReadOnlyList<TokenGuess> After,
    double NewBefore, double NewAfter, double TrueBefore, double TrueAfter);

/// <summary>
/// What <see cref="EditPreview.Run"/> gave: the editor's report, the seconds of the edit itself (<see cref="IKnowledgeEditor.Apply"/>
/// alone), of the editor's preparation (statistics, context templates) and of scoring the prompts before and after, and
/// every prompt's preview.
/// </summary>
public sealed record EditPreviewResult(EditReport Report, double Seconds, IReadOnlyList<PromptPreview> Prompts)
{
    public double PrepareSeconds { get; init; }
    public double ScoringSeconds { get; init; }
}

/// <summary><c>kvlab edit</c>'s engine: one request applied to the model, with what it changed on the rewrite prompt and others.</summary>
public static class EditPreview
{
    /// <summary>
    /// Scores <paramref name="prompts"/> (label, text), prepares and applies <paramref name="editor"/> to <paramref name="request"/>
    /// (the model stays edited), and scores them again.
    /// </summary>
    public static EditPreviewResult Run(CausalLM model, ITokenizer tokenizer, IKnowledgeEditor editor, EditRequest request,
        IReadOnlyList<(string Label, string Text)> prompts, int top, Action<string>? log = null)
    {
        var scoring = Stopwatch.StartNew();
        var before = prompts.Select(p => NextTokens(model, tokenizer, p.Text, top)).ToList();
        var beforeScores = TargetScores(model, tokenizer, request, prompts);
        scoring.Stop();
        var preparing = Stopwatch.StartNew();
        foreach (string line in editor.Prepare(model, tokenizer)) log?.Invoke(line);
        preparing.Stop();
        var watch = Stopwatch.StartNew();
        var report = editor.Apply(model, tokenizer, [request]);
        double seconds = watch.Elapsed.TotalSeconds;
        scoring.Start();
        var after = prompts.Select(p => NextTokens(model, tokenizer, p.Text, top)).ToList();
        var afterScores = TargetScores(model, tokenizer, request, prompts);
        scoring.Stop();
        return new EditPreviewResult(report, seconds, [.. prompts.Select((p, i) => new PromptPreview(p.Label, p.Text, before[i], after[i],
            beforeScores[i].New, afterScores[i].New, beforeScores[i].True, afterScores[i].True))])
        {
            PrepareSeconds = preparing.Elapsed.TotalSeconds, ScoringSeconds = scoring.Elapsed.TotalSeconds,
        };
    }

    /// <summary>The <paramref name="k"/> likeliest next tokens after <paramref name="prompt"/>, likeliest first.</summary>
    public static IReadOnlyList<TokenGuess> NextTokens(CausalLM model, ITokenizer tokenizer, string prompt, int k)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        int[] ids = PromptEncoding.Encode(model, tokenizer, prompt);
        var logits = model.Forward(tensor(ids.Select(i => (long)i).ToArray(), [1, ids.Length]))[0, -1];
        var (values, indices) = nn.functional.softmax(logits, -1).topk(k);
        float[] p = values.data<float>().ToArray();
        long[] id = indices.data<long>().ToArray();
        return [.. id.Select((t, i) => new TokenGuess(tokenizer.TokenText((int)t), p[i]))];
    }

    /// <summary>exp(−L) of the new and true objects after each prompt (SPEC §3's mean token probability); NaN for a missing true object.</summary>
    private static List<(double New, double True)> TargetScores(CausalLM model, ITokenizer tokenizer, EditRequest r, IReadOnlyList<(string Label, string Text)> prompts)
    {
        var items = prompts.SelectMany(p => r.TargetTrue is null ? new[] { (p.Text, r.TargetNew) } : [(p.Text, r.TargetNew), (p.Text, r.TargetTrue)]).ToList();
        var s = Scorer.Score(model, tokenizer, items);
        int per = r.TargetTrue is null ? 1 : 2;
        return [.. prompts.Select((_, i) => (s[i * per].MeanTokenProbability, per == 2 ? s[i * per + 1].MeanTokenProbability : double.NaN))];
    }
}
