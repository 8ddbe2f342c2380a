using System.CommandLine;
using KeyValueLab.Models;
using KeyValueLab.Tuning;

namespace KeyValueLab.Cli.Commands;

/// <summary><c>kvlab tune-eval</c>: a model plus an adapter folder (ours or PEFT's) → per-task exact-match table.</summary>
internal static class TuneEvalCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var model = ModelOptions.Model();
        var dtype = ModelOptions.DType();
        var device = ModelOptions.Device();
        var tokenizer = ModelOptions.Tokenizer();
        var tasks = TuningOptions.Tasks();
        var adapter = new Option<string?>("--adapter", "-a") { Description = "Adapter folder (adapter_config.json + adapter_model.safetensors); omit to evaluate the base model." };
        var merge = new Option<bool>("--merge") { Description = "Merge the adapter into the weights before evaluating (fp32 base)." };
        var fourBit = TuningOptions.FourBit();
        var maxEval = TuningOptions.MaxEval();
        var evalBatch = TuningOptions.EvalBatch();
        var likelihood = TuningOptions.LabelLikelihood();
        var json = new Option<bool>("--json") { Description = "Print the metrics as JSON instead of a table." };

        var command = new Command("tune-eval", "Evaluate a model with a LoRA adapter on classification tasks (exact match of greedy generations).")
        {
            model, dtype, device, tokenizer, tasks, adapter, merge, fourBit, maxEval, evalBatch, likelihood, json,
        };
        command.SetAction(parse => CommandRunner.Run(stderr, () =>
        {
            var taskSpecs = TuningOptions.ParseTasks(parse.GetValue(tasks));
            string modelPath = parse.GetValue(model)!;
            using var loaded = ModelLoader.Load(modelPath, ModelOptions.Loading(parse, dtype, device, fourBit));
            var tok = ModelOptions.LoadTokenizer(modelPath, parse.GetValue(tokenizer), loaded.Config);
            var selection = new TaskSelection { MaxEval = parse.GetValue(maxEval) };
            var data = taskSpecs.Select(t => TaskLoader.Load(t.Name, t.Path, selection)).ToList();

            var nf4 = loaded.FourBit;  // quantised as it was read
            using var lora = parse.GetValue(adapter) is string dir ? LoraModel.Load(loaded.Model, dir) : null;
            if (lora is not null)
            {
                stderr.WriteLine(lora.TrainableSummary());
                if (parse.GetValue(merge)) lora.Merge();
            }
            var metrics = TuneEngine.Evaluate(loaded.Model, tok, data, parse.GetValue(evalBatch), parse.GetValue(likelihood), stderr.WriteLine).Select(t => t.Metrics).ToList();
            var report = new TuningReport
            {
                Model = modelPath, Targets = lora?.Config.TargetModules ?? [], FourBit = nf4 is not null,
                TrainableParameters = lora?.TrainableCount ?? 0, AllParameters = lora?.AllCount ?? 0,
                BaseLinearBytesFp32 = nf4?.Fp32Bytes ?? TuneEngine.LinearBytes(loaded.Model), BaseLinearBytesStored = nf4?.Nf4Bytes ?? TuneEngine.LinearBytes(loaded.Model),
                Tasks = metrics,
            };
            stdout.Write(parse.GetValue(json) ? report.ToJsonString() + "\n" : report.Table());
            return ExitCodes.Ok;
        }));
        return command;
    }
}
