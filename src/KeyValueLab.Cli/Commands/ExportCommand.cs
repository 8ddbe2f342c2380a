using System.CommandLine;
using KeyValueLab.Checkpoints;
using KeyValueLab.Models;
using KeyValueLab.Tuning;

namespace KeyValueLab.Cli.Commands;

/// <summary>
/// <c>kvlab export --gguf OUT.gguf</c>: a model (a folder saved by <c>kvlab edit --save</c>, any checkpoint, and
/// optionally a LoRA adapter merged in) written as a F32 or F16 GGUF file that llama.cpp runs.
/// </summary>
internal static class ExportCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var model = ModelOptions.Model();
        var tokenizer = ModelOptions.Tokenizer();
        var gguf = new Option<string>("--gguf") { Description = "GGUF file to write.", Required = true };
        var lora = new Option<string?>("--lora") { Description = "LoRA adapter folder (ours or PEFT's) to merge into the weights first." };
        var type = new Option<string>("--type") { Description = "Stored type of matrices: f32 or f16 (vectors stay f32).", DefaultValueFactory = _ => "f32" };
        var force = new Option<bool>("--force") { Description = "Overwrite the output file if it exists." };

        var command = new Command("export", "Write a model (edited, or with a LoRA adapter merged) as a GGUF file for llama.cpp.")
        {
            model, tokenizer, gguf, lora, type, force,
        };
        command.SetAction(parse => CommandRunner.Run(stderr, () =>
        {
            string modelPath = parse.GetValue(model)!, output = parse.GetValue(gguf)!;
            var ggmlType = parse.GetValue(type)!.ToLowerInvariant() switch
            {
                "f32" => GgmlType.F32,
                "f16" => GgmlType.F16,
                var t => throw new UsageException($"--type {t}: expected f32 or f16"),
            };
            if (!parse.GetValue(force) && File.Exists(output)) throw new UsageException($"{output} exists; pass --force to overwrite it");
            using var loaded = ModelLoader.Load(modelPath);
            var tok = ModelOptions.LoadTokenizer(modelPath, parse.GetValue(tokenizer), loaded.Config);
            using var adapter = parse.GetValue(lora) is string folder ? LoraModel.Load(loaded.Model, folder) : null;
            adapter?.Merge();
            try { GgufExport.Write(loaded.Model, tok, output, ggmlType, overwrite: true); }
            catch (NotSupportedException e) { throw new InputException(modelPath, e.Message, e); }
            stdout.WriteLine($"wrote {output} ({loaded.Config.ModelType}, {ggmlType}, {new FileInfo(output).Length:N0} bytes{(adapter is null ? "" : ", LoRA merged")})");
            return ExitCodes.Ok;
        }));
        return command;
    }
}
