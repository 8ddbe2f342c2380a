using System.CommandLine;
using KeyValueLab.Models;
using KeyValueLab.Tuning;

namespace KeyValueLab.Cli.Commands;

/// <summary>
/// <c>kvlab tune</c>: LoRA (optionally on an NF4 base) on one or more tasks, then exact-match evaluation. Writes the adapter
/// (PEFT format), <c>metrics.json</c> and per-epoch checkpoints into <c>--out</c>; the table goes to stdout, progress to stderr.
/// </summary>
internal static class TuneCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var model = ModelOptions.Model();
        var dtype = ModelOptions.DType();
        var device = ModelOptions.Device();
        var tokenizer = ModelOptions.Tokenizer();
        var tasks = TuningOptions.Tasks();
        var output = new Option<string>("--out", "-o") { Description = "Folder for the adapter, metrics.json and checkpoints/.", Required = true };
        var targets = new Option<string>("--targets") { Description = "LoRA targets: module names or suffixes, or shortcuts q, k, v, o, keys, keys:gate, keys:up, values.", DefaultValueFactory = _ => "q,v" };
        var targetRegex = new Option<string?>("--target-regex") { Description = "PEFT regex form of target_modules (full match of the module name); replaces --targets." };
        var rank = new Option<int>("--r") { Description = "LoRA rank.", DefaultValueFactory = _ => 8 };
        var alpha = new Option<double>("--alpha") { Description = "LoRA alpha (scale alpha/r).", DefaultValueFactory = _ => 16 };
        var dropout = new Option<double>("--dropout") { Description = "Dropout on the adapter input.", DefaultValueFactory = _ => 0.1 };
        var rsLora = new Option<bool>("--rslora") { Description = "rsLoRA scale alpha/sqrt(r)." };
        var fourBit = TuningOptions.FourBit();
        var epochs = new Option<int>("--epochs") { Description = "Epochs.", DefaultValueFactory = _ => 5 };
        var batch = new Option<int>("--batch") { Description = "Packed rows per micro-batch.", DefaultValueFactory = _ => 32 };
        var accumulation = new Option<int>("--grad-accum") { Description = "Micro-batches per optimizer step.", DefaultValueFactory = _ => 2 };
        var lr = new Option<double>("--lr") { Description = "AdamW learning rate (constant after warmup).", DefaultValueFactory = _ => 2e-4 };
        var warmup = new Option<double>("--warmup-ratio") { Description = "Fraction of steps with linear warmup.", DefaultValueFactory = _ => 0.03 };
        var clip = new Option<double>("--max-grad-norm") { Description = "Gradient-norm clip.", DefaultValueFactory = _ => 0.3 };
        var maxLength = new Option<int>("--max-length") { Description = "Packed row length in tokens (capped at the model's positions).", DefaultValueFactory = _ => 512 };
        var answerOnly = new Option<bool>("--answer-only-loss") { Description = "Loss on the label tokens only (the paper used every token)." };
        var seed = new Option<int>("--seed") { Description = "Seed for adapters, shuffling and dropout.", DefaultValueFactory = _ => 42 };
        var maxSteps = new Option<int>("--max-steps") { Description = "Stop after N optimizer steps (0 = all epochs).", DefaultValueFactory = _ => 0 };
        var maxTrain = new Option<int>("--max-train") { Description = "Training examples per task.", DefaultValueFactory = _ => 5000 };
        var maxEval = TuningOptions.MaxEval();
        var noShuffle = new Option<bool>("--no-shuffle") { Description = "Take the first --max-train rows in file order, as the paper's code did." };
        var resume = new Option<bool>("--resume") { Description = "Continue from the last epoch checkpoint in --out/checkpoints." };
        var evalBatch = TuningOptions.EvalBatch();
        var likelihood = TuningOptions.LabelLikelihood();
        var noEval = new Option<bool>("--no-eval") { Description = "Train only." };

        var command = new Command("tune", "LoRA-tune a model (optionally on a 4-bit NF4 base) on classification tasks and evaluate by exact match.")
        {
            model, dtype, device, tokenizer, tasks, output, targets, targetRegex, rank, alpha, dropout, rsLora, fourBit, epochs, batch, accumulation, lr, warmup,
            clip, maxLength, answerOnly, seed, maxSteps, maxTrain, maxEval, noShuffle, resume, evalBatch, likelihood, noEval,
        };
        command.SetAction(parse => CommandRunner.Run(stderr, () =>
        {
            var taskSpecs = TuningOptions.ParseTasks(parse.GetValue(tasks));
            if (parse.GetValue(rank) < 1) throw new UsageException("--r must be >= 1");
            if (parse.GetValue(dropout) is < 0 or >= 1) throw new UsageException("--dropout must be in [0, 1)");
            if (parse.GetValue(epochs) < 1 || parse.GetValue(batch) < 1 || parse.GetValue(accumulation) < 1) throw new UsageException("--epochs, --batch and --grad-accum must be >= 1");
            if (parse.GetValue(maxLength) < 2) throw new UsageException("--max-length must be >= 2");
            string modelPath = parse.GetValue(model)!, outDir = parse.GetValue(output)!;

            using var loaded = ModelLoader.Load(modelPath, ModelOptions.Loading(parse, dtype, device, fourBit));
            var tok = ModelOptions.LoadTokenizer(modelPath, parse.GetValue(tokenizer));
            var selection = new TaskSelection { MaxTrain = parse.GetValue(maxTrain), MaxEval = parse.GetValue(maxEval), Shuffle = !parse.GetValue(noShuffle), Seed = parse.GetValue(seed) };
            var data = taskSpecs.Select(t => TaskLoader.Load(t.Name, t.Path, selection)).ToList();
            foreach (var d in data) stderr.WriteLine($"task {d.Name}: {d.Train.Count} train, {d.Eval.Count} eval ({d.SplitNote})");

            string modelType = loaded.Config.ModelType;
            IReadOnlyList<string> resolved;
            try { resolved = parse.GetValue(targetRegex) is string re ? [re] : LoraConfig.ResolveTargets(parse.GetValue(targets)!, modelType); }
            catch (ArgumentException e) { throw new UsageException(e.Message); }
            var config = new LoraConfig
            {
                R = parse.GetValue(rank), Alpha = parse.GetValue(alpha), Dropout = parse.GetValue(dropout), UseRsLora = parse.GetValue(rsLora),
                TargetModules = parse.GetValue(targetRegex) is null ? resolved : [], TargetRegex = parse.GetValue(targetRegex),
                BaseModel = Path.GetFullPath(modelPath),
            };

            var nf4 = loaded.FourBit;  // quantised as it was read
            long fp32Bytes = nf4?.Fp32Bytes ?? LinearBytes(loaded.Model);
            if (nf4 is not null) stderr.WriteLine($"4-bit base: {nf4.Modules.Count} linears, {nf4.Fp32Bytes:N0} bytes fp32 -> {nf4.Nf4Bytes:N0} bytes NF4 ({(double)nf4.Nf4Bytes / nf4.Fp32Bytes:F4}x)");
            LoraModel lora;
            try { lora = LoraModel.Attach(loaded.Model, config, parse.GetValue(seed)); }
            catch (ArgumentException e) { throw new UsageException(e.Message); }
            using var _ = lora;
            stderr.WriteLine(lora.TrainableSummary());

            var options = new TrainOptions
            {
                LearningRate = parse.GetValue(lr), WarmupRatio = parse.GetValue(warmup), MaxGradNorm = parse.GetValue(clip), Epochs = parse.GetValue(epochs),
                MicroBatch = parse.GetValue(batch), GradientAccumulation = parse.GetValue(accumulation),
                MaxLength = Math.Min(parse.GetValue(maxLength), loaded.Config.MaxPositions), AnswerOnlyLoss = parse.GetValue(answerOnly),
                Seed = parse.GetValue(seed), MaxSteps = parse.GetValue(maxSteps), CheckpointDir = Path.Combine(outDir, "checkpoints"), Resume = parse.GetValue(resume),
            };
            var trained = SftTrainer.Train(lora, tok, [.. data.SelectMany(d => d.Train)], options, stderr);
            lora.Save(outDir);
            stderr.WriteLine($"adapter saved to {outDir} ({trained.Steps} steps, {trained.TokensPerSecond:F0} tokens/s)");

            var metrics = parse.GetValue(noEval) ? [] : TuningOptions.Evaluate(loaded.Model, tok, data, parse.GetValue(evalBatch), parse.GetValue(likelihood), stderr);
            var report = new TuningReport
            {
                Model = modelPath, Targets = resolved, FourBit = nf4 is not null, TrainableParameters = lora.TrainableCount, AllParameters = lora.AllCount,
                BaseLinearBytesFp32 = fp32Bytes, BaseLinearBytesStored = nf4?.Nf4Bytes ?? fp32Bytes, Training = trained, Tasks = metrics,
            };
            File.WriteAllText(Path.Combine(outDir, "metrics.json"), report.ToJsonString());
            stdout.WriteLine(lora.TrainableSummary());
            stdout.Write(report.Table());
            return ExitCodes.Ok;
        }));
        return command;
    }

    /// <summary>Bytes of the linears a 4-bit base would quantise (all but lm_head), in fp32.</summary>
    internal static long LinearBytes(CausalLM model) => KeyValueLab.Study.StudyRunner.LinearBytes(model);
}
