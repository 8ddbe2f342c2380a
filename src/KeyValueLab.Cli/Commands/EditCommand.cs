using System.CommandLine;
using KeyValueLab.Editing;
using KeyValueLab.Inference;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

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
            string modelPath = parse.GetValue(model)!;
            using var loaded = ModelLoader.Load(modelPath, ModelOptions.Loading(parse, dtype, device));
            var tok = ModelOptions.LoadTokenizer(modelPath, parse.GetValue(tokenizer));
            var edit = editor.Create(parse, loaded.Model);
            var request = new EditRequest("cli", template, subj, parse.GetValue(targetNew)!, parse.GetValue(targetTrue));
            var prompts = new List<(string Label, string Text)> { ("rewrite", request.FilledPrompt) };
            if (parse.GetValue(paraphrase) is { } p) prompts.Add(("paraphrase", p));
            if (parse.GetValue(neighbour) is { } n) prompts.Add(("neighbour", n));
            int k = parse.GetValue(top);

            var before = prompts.Select(x => Top(loaded.Model, tok, x.Text, k)).ToList();
            var beforeScores = TargetScores(loaded.Model, tok, request, prompts);
            foreach (string line in edit.Prepare(loaded.Model, tok)) stderr.WriteLine(line);
            var watch = System.Diagnostics.Stopwatch.StartNew();
            var report = edit.Apply(loaded.Model, tok, [request]);
            double seconds = watch.Elapsed.TotalSeconds;
            var after = prompts.Select(x => Top(loaded.Model, tok, x.Text, k)).ToList();
            var afterScores = TargetScores(loaded.Model, tok, request, prompts);

            stdout.WriteLine($"{edit.Method} {edit.Scope.Label(new Memory.FfnMemory(loaded.Model))}: \"{request.FilledPrompt}\" → {request.TargetNew}  ({seconds:F2} s, {report.Steps} steps, final loss {report.FinalLoss:F4})");
            for (int i = 0; i < prompts.Count; i++)
            {
                stdout.WriteLine();
                stdout.WriteLine($"[{prompts[i].Label}] {prompts[i].Text}");
                stdout.WriteLine($"  before: {before[i]}");
                stdout.WriteLine($"  after:  {after[i]}");
                stdout.WriteLine($"  P({request.TargetNew}) {beforeScores[i].New:F4} → {afterScores[i].New:F4}" +
                    (request.TargetTrue is null ? "" : $"   P({request.TargetTrue}) {beforeScores[i].True:F4} → {afterScores[i].True:F4}"));
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

    /// <summary>"token (p) token (p) …" for the next token after <paramref name="prompt"/>.</summary>
    private static string Top(CausalLM model, ITokenizer tok, string prompt, int k)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        int[] ids = PromptEncoding.Encode(model, tok, prompt);
        var logits = model.Forward(tensor(ids.Select(i => (long)i).ToArray(), [1, ids.Length]))[0, -1];
        var (values, indices) = nn.functional.softmax(logits, -1).topk(k);
        float[] p = values.data<float>().ToArray();
        long[] id = indices.data<long>().ToArray();
        return string.Join("  ", id.Select((t, i) => $"{tok.TokenText((int)t).Trim()} ({p[i]:F3})"));
    }

    /// <summary>exp(−L) of the new and true objects after each prompt (SPEC §3's mean token probability).</summary>
    private static List<(double New, double True)> TargetScores(CausalLM model, ITokenizer tok, EditRequest r, List<(string Label, string Text)> prompts)
    {
        var items = prompts.SelectMany(p => r.TargetTrue is null ? new[] { (p.Text, r.TargetNew) } : [(p.Text, r.TargetNew), (p.Text, r.TargetTrue)]).ToList();
        var s = Scorer.Score(model, tok, items);
        int per = r.TargetTrue is null ? 1 : 2;
        return [.. prompts.Select((_, i) => (s[i * per].MeanTokenProbability, per == 2 ? s[i * per + 1].MeanTokenProbability : double.NaN))];
    }
}
