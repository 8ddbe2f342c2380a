using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using KeyValueLab.Editing;
using KeyValueLab.Evaluation;
using KeyValueLab.Models;

namespace KeyValueLab.Cli.Commands;

/// <summary>
/// <c>kvlab edit</c>: inserts one fact and prints the top next-token predictions before and after the edit
/// for the rewrite prompt, a paraphrase and a neighbour.
/// </summary>
internal static class EditCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var model = ModelOptions.Model();
        var dtype = ModelOptions.DType();
        var device = ModelOptions.Device();
        var tokenizer = ModelOptions.Tokenizer();
        var prompt = new Option<string>("--prompt", "-i") { Description = "Rewrite prompt with {} for the subject, e.g. \"{} is located in\".", Required = true };
        var subject = new Option<string>("--subject") { Description = "The subject, e.g. \"Angola\".", Required = true };
        var targetNew = new Option<string>("--target-new") { Description = "The new object, e.g. \"Antarctica\".", Required = true };
        var targetTrue = new Option<string?>("--target-true") { Description = "The current object (shown with its probability)." };
        var paraphrase = new Option<string?>("--paraphrase") { Description = "A paraphrase of the filled prompt." };
        var neighbour = new Option<string?>("--neighbour") { Description = "A prompt about another subject the edit should not change." };
        var top = new Option<int>("--top") { Description = "Predictions shown per prompt.", DefaultValueFactory = _ => 5 };
        var save = new Option<string?>("--save") { Description = "Save the edited model to this folder." };
        var editor = new EditorOptions();
        var command = new Command("edit", "Insert one fact (FT on keys or values, ROME, Key-ROME, MEMIT) and show predictions before and after.")
        {
            model, dtype, device, tokenizer, prompt, subject, targetNew, targetTrue, paraphrase, neighbour, top, save,
        };
        editor.AddTo(command);
        command.SetAction(parse => CommandRunner.Run(stderr, () =>
        {
            string template = parse.GetValue(prompt)!, subj = parse.GetValue(subject)!;
            if (!template.Contains("{}", StringComparison.Ordinal)) throw new UsageException("--prompt needs {} where the subject goes");
            if (parse.GetValue(top) < 1) throw new UsageException($"--top {parse.GetValue(top)} must be >= 1");
            string modelPath = parse.GetValue(model)!;
            var loading = Stopwatch.StartNew();
            using var loaded = ProgressRenderer.Run(stderr, (progress, _) => ModelLoader.Load(modelPath, ModelOptions.Loading(parse, dtype, device) with { Progress = progress }));
            var tok = ModelOptions.LoadTokenizer(modelPath, parse.GetValue(tokenizer), loaded.Config);
            loading.Stop();
            var request = new EditRequest("cli", template, subj, parse.GetValue(targetNew)!, parse.GetValue(targetTrue));
            var prompts = new List<(string Label, string Text)> { ("rewrite", request.FilledPrompt) };
            if (parse.GetValue(paraphrase) is { } para) prompts.Add(("paraphrase", para));
            if (parse.GetValue(neighbour) is { } n) prompts.Add(("neighbour", n));
            var (edit, result) = ProgressRenderer.Run(stderr, (progress, log) =>
            {
                var e = editor.Create(parse, loaded.Model, progress, log);
                return (e, EditPreview.Run(loaded.Model, tok, e, request, prompts, parse.GetValue(top), log));
            });
            stderr.WriteLine(TimingLine(loading.Elapsed.TotalSeconds, result));
            stdout.WriteLine($"{edit.Method} {edit.Scope.Label(new Memory.FfnMemory(loaded.Model))}: \"{request.FilledPrompt}\" → {request.TargetNew}  (edit {result.Seconds:F2} s, {result.Report.Steps} steps, final loss {result.Report.FinalLoss:F4})");
            foreach (var p in result.Prompts)
            {
                stdout.WriteLine();
                stdout.WriteLine($"[{p.Label}] {p.Text}");
                stdout.WriteLine($"  before: {Show(p.Before)}");
                stdout.WriteLine($"  after:  {Show(p.After)}");
                stdout.WriteLine($"  P({request.TargetNew}) {p.NewBefore:F4} → {p.NewAfter:F4}" +
                    (request.TargetTrue is null ? "" : $"   P({request.TargetTrue}) {p.TrueBefore:F4} → {p.TrueAfter:F4}"));
            }
            if (parse.GetValue(save) is { } folder)
            {
                loaded.Save(folder);
                stderr.WriteLine($"saved the edited model to {folder}");
            }
            return ExitCodes.Ok;
        }));
        return command;
    }

    /// <summary>"time: loading 3.21 s, preparation 80.12 s (statistics, templates), edit 2.31 s, scoring 0.84 s": the edit apart from the rest.</summary>
    internal static string TimingLine(double loadingSeconds, EditPreviewResult result) => string.Create(CultureInfo.InvariantCulture,
        $"time: loading {loadingSeconds:F2} s, preparation {result.PrepareSeconds:F2} s (statistics, templates), edit {result.Seconds:F2} s, scoring {result.ScoringSeconds:F2} s");

    /// <summary>"token (p) token (p) …".</summary>
    private static string Show(IReadOnlyList<TokenGuess> guesses) => string.Join("  ", guesses.Select(g => $"{g.Token.Trim()} ({g.Probability:F3})"));
}
