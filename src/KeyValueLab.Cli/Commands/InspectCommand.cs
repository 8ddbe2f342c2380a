using System.CommandLine;
using KeyValueLab.Memory;
using KeyValueLab.Models;
using Spectre.Console;

namespace KeyValueLab.Cli.Commands;

/// <summary>
/// <c>kvlab inspect</c>: for a prompt and a layer, the memories (FFN keys) most active at the last
/// token and, for each, the tokens its value vector promotes most through the unembedding
/// (Geva et al. 2022, "Transformer Feed-Forward Layers Build Predictions by Promoting Concepts").
/// </summary>
internal static class InspectCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var model = ModelOptions.Model();
        var dtype = ModelOptions.DType();
        var device = ModelOptions.Device();
        var tokenizer = ModelOptions.Tokenizer();
        var prompt = new Option<string>("--prompt", "-i") { Description = "Prompt to run; memories are read at its last token.", Required = true };
        var layer = new Option<int>("--layer", "-l") { Description = "FFN layer (0-based; negative counts from the end).", DefaultValueFactory = _ => -1 };
        var top = new Option<int>("--top") { Description = "How many memories to show.", DefaultValueFactory = _ => 10 };
        var tokens = new Option<int>("--tokens") { Description = "How many promoted tokens to list per memory.", DefaultValueFactory = _ => 8 };
        var json = new Option<bool>("--json") { Description = "Print JSON instead of a table." };

        var command = new Command("inspect", "Show the most active FFN memories at a prompt's last token and the tokens their values promote.")
        {
            model, dtype, device, tokenizer, prompt, layer, top, tokens, json,
        };
        command.SetAction(parse => CommandRunner.Run(stderr, () =>
        {
            if (parse.GetValue(top) <= 0 || parse.GetValue(tokens) <= 0) throw new UsageException("--top and --tokens must be positive");
            if (string.IsNullOrEmpty(parse.GetValue(prompt))) throw new UsageException("--prompt is empty: memories are read at the prompt's last token");
            string modelPath = parse.GetValue(model)!;
            using var loaded = ModelLoader.Load(modelPath, ModelOptions.Loading(parse, dtype, device));
            var tok = ModelOptions.LoadTokenizer(modelPath, parse.GetValue(tokenizer), loaded.Config);
            int layers = loaded.Config.NumLayers, l = parse.GetValue(layer);
            if (l < 0) l += layers;
            if (l < 0 || l >= layers) throw new UsageException($"--layer {parse.GetValue(layer)} is out of range: the model has {layers} layers (0..{layers - 1})");
            int k = parse.GetValue(top), n = parse.GetValue(tokens);
            if (k <= 0 || n <= 0) throw new UsageException("--top and --tokens must be positive");

            var report = MemoryInspector.Inspect(loaded.Model, tok, parse.GetValue(prompt)!, l, k, n);
            if (parse.GetValue(json)) stdout.WriteLine(report.ToJson());
            else Render(report, stdout);
            return ExitCodes.Ok;
        }));
        return command;
    }

    private static void Render(MemoryReport report, TextWriter stdout)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(stdout) });
        console.MarkupLine($"[bold]Layer {report.Layer}[/] of {report.ModelType}, last token [yellow]{Markup.Escape(Show(report.LastToken))}[/] " +
                           $"(position {report.Position}); model's next-token guess: [green]{Markup.Escape(string.Join("  ", report.NextTokens.Select(Show)))}[/]");
        var table = new Table().Border(TableBorder.Rounded)
            .AddColumn("memory").AddColumn(new TableColumn("coefficient").RightAligned()).AddColumn("matrix")
            .AddColumn("value vector promotes (top tokens through the unembedding)");
        foreach (var m in report.Memories)
            table.AddRow(m.Index.ToString(), m.Coefficient.ToString("F3"), Markup.Escape(m.KeyName),
                Markup.Escape(string.Join("  ", m.PromotedTokens.Select(Show))));
        console.Write(table);
    }

    private static string Show(string token) => $"'{token.Replace("\n", "\\n")}'";
}
