using System.CommandLine;
using KeyValueLab.Inference;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;

namespace KeyValueLab.Cli.Commands;

/// <summary>
/// <c>kvlab generate</c>: like llama2.c's <c>run</c>, writes the prompt followed by the generated text
/// to stdout and nothing else; diagnostics go to stderr. <c>--steps</c> counts every position,
/// the prompt's (and BOS) included, as llama2.c's <c>-n</c> does.
/// </summary>
internal static class GenerateCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var model = ModelOptions.Model();
        var dtype = ModelOptions.DType();
        var device = ModelOptions.Device();
        var tokenizer = ModelOptions.Tokenizer();
        var prompt = new Option<string>("--prompt", "-i") { Description = "Text to start from (default: empty, i.e. BOS only).", DefaultValueFactory = _ => "" };
        var steps = new Option<int>("--steps", "-n") { Description = "Positions to run, prompt included; 0 = the model's context length.", DefaultValueFactory = _ => 256 };
        var temperature = new Option<float>("--temperature", "-t") { Description = "Sampling temperature; 0 = greedy.", DefaultValueFactory = _ => 1.0f };
        var topK = new Option<int>("--top-k") { Description = "Sample among the K most likely tokens; 0 = off.", DefaultValueFactory = _ => 0 };
        var topP = new Option<float>("--top-p", "-p") { Description = "Nucleus sampling threshold in (0, 1]; 1 = off.", DefaultValueFactory = _ => 0.9f };
        var seed = new Option<ulong>("--seed", "-s") { Description = "Random seed for sampling (same seed, same text).", DefaultValueFactory = _ => 42UL };
        var noStop = new Option<bool>("--no-stop") { Description = "Keep going past end-of-sequence tokens." };

        var command = new Command("generate", "Generate text from a model (HF folder or llama2.c .bin), llama2.c-style.")
        {
            model, dtype, device, tokenizer, prompt, steps, temperature, topK, topP, seed, noStop,
        };
        command.SetAction(parse => CommandRunner.Run(stderr, () =>
        {
            float t = parse.GetValue(temperature), p = parse.GetValue(topP);
            int k = parse.GetValue(topK), n = parse.GetValue(steps);
            if (n < 0) throw new UsageException("--steps must be >= 0");
            var options = new GenerationOptions
            {
                Steps = n, Temperature = t, TopK = k, TopP = p, Seed = parse.GetValue(seed), StopAtEos = !parse.GetValue(noStop),
            };
            try { options.Validate(); }  // before the model is loaded
            catch (ArgumentException e) { throw new UsageException("--" + e.Message); }

            string modelPath = parse.GetValue(model)!;
            using var loaded = ModelLoader.Load(modelPath, ModelOptions.Loading(parse, dtype, device));
            ITokenizer tok = ModelOptions.LoadTokenizer(modelPath, parse.GetValue(tokenizer), loaded.Config);
            var started = System.Diagnostics.Stopwatch.StartNew();
            var result = Generator.Generate(loaded.Model, tok, parse.GetValue(prompt) ?? "", options, text => { stdout.Write(text); stdout.Flush(); });
            stdout.Write('\n');
            stdout.Flush();
            if (result.Tokens.Count > 1)
                stderr.WriteLine($"achieved tok/s: {(result.Tokens.Count - 1) / started.Elapsed.TotalSeconds:F1}");
            return ExitCodes.Ok;
        }));
        return command;
    }
}
