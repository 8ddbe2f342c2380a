using System.CommandLine;
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
        TrainOptions train = new();
        LoraConfig lora = new();
        TaskSelection selection = new();
        var model = ModelOptions.Model();
        var dtype = ModelOptions.DType();
        var device = ModelOptions.Device();
        var tokenizer = ModelOptions.Tokenizer();
        var tasks = TuningOptions.Tasks();
        var output = new Option<string>("--out", "-o") { Description = "Folder for the adapter, metrics.json and checkpoints/.", Required = true };
        var targets = new Option<string>("--targets") { Description = "LoRA targets: module names or suffixes, or shortcuts q, k, v, o, keys, keys:gate, keys:up, values.", DefaultValueFactory = _ => TuneJob.DefaultTargets };
        var targetRegex = new Option<string?>("--target-regex") { Description = "PEFT regex form of target_modules (full match of the module name); replaces --targets." };
        var rank = new Option<int>("--r") { Description = "LoRA rank.", DefaultValueFactory = _ => lora.R };
        var alpha = new Option<double>("--alpha") { Description = "LoRA alpha (scale alpha/r).", DefaultValueFactory = _ => lora.Alpha };
        var dropout = new Option<double>("--dropout") { Description = "Dropout on the adapter input.", DefaultValueFactory = _ => lora.Dropout };
        var rsLora = new Option<bool>("--rslora") { Description = "rsLoRA scale alpha/sqrt(r)." };
        var fourBit = TuningOptions.FourBit();
        var epochs = new Option<int>("--epochs") { Description = "Epochs.", DefaultValueFactory = _ => train.Epochs };
        var batch = new Option<int>("--batch") { Description = "Packed rows per micro-batch.", DefaultValueFactory = _ => train.MicroBatch };
        var accumulation = new Option<int>("--grad-accum") { Description = "Micro-batches per optimizer step.", DefaultValueFactory = _ => train.GradientAccumulation };
        var lr = new Option<double>("--lr") { Description = "AdamW learning rate (constant after warmup).", DefaultValueFactory = _ => train.LearningRate };
        var warmup = new Option<double>("--warmup-ratio") { Description = "Fraction of steps with linear warmup.", DefaultValueFactory = _ => train.WarmupRatio };
        var clip = new Option<double>("--max-grad-norm") { Description = "Gradient-norm clip.", DefaultValueFactory = _ => train.MaxGradNorm };
        var maxLength = new Option<int>("--max-length") { Description = "Packed row length in tokens (capped at the model's positions).", DefaultValueFactory = _ => train.MaxLength };
        var answerOnly = new Option<bool>("--answer-only-loss") { Description = "Loss on the label tokens only (the paper used every token)." };
        var checkpointing = new Option<bool>("--gradient-checkpointing") { Description = "Recompute each decoder layer in the backward pass instead of keeping its activations (Llama family; how a 4-bit 7B step fits in 6 GB)." };
        var noPacking = new Option<bool>("--no-packing") { Description = "One example a row, padded, as the evaluator sees it (the paper packed examples into rows of --max-length)." };
        var seed = new Option<int>("--seed") { Description = "Seed for adapters, shuffling and dropout.", DefaultValueFactory = _ => train.Seed };
        var maxSteps = new Option<int>("--max-steps") { Description = "Stop after N optimizer steps (0 = all epochs).", DefaultValueFactory = _ => train.MaxSteps };
        var maxTrain = new Option<int>("--max-train") { Description = "Training examples per task.", DefaultValueFactory = _ => selection.MaxTrain };
        var maxEval = TuningOptions.MaxEval();
        var noShuffle = new Option<bool>("--no-shuffle") { Description = "Take the first --max-train rows in file order, as the paper's code did." };
        var resume = new Option<bool>("--resume") { Description = "Continue from the last epoch checkpoint in --out/checkpoints." };
        var evalBatch = TuningOptions.EvalBatch();
        var likelihood = TuningOptions.LabelLikelihood();
        var noEval = new Option<bool>("--no-eval") { Description = "Train only." };

        var command = new Command("tune", "LoRA-tune a model (optionally on a 4-bit NF4 base) on classification tasks and evaluate by exact match.")
        {
            model, dtype, device, tokenizer, tasks, output, targets, targetRegex, rank, alpha, dropout, rsLora, fourBit, epochs, batch, accumulation, lr, warmup,
            clip, maxLength, answerOnly, noPacking, checkpointing, seed, maxSteps, maxTrain, maxEval, noShuffle, resume, evalBatch, likelihood, noEval,
        };
        command.SetAction(parse => CommandRunner.Run(stderr, () =>
        {
            var taskSpecs = TuningOptions.ParseTasks(parse.GetValue(tasks));
            string modelPath = parse.GetValue(model)!, outDir = parse.GetValue(output)!;
            var job = new TuneJob
            {
                ModelPath = modelPath, TokenizerPath = parse.GetValue(tokenizer), Tasks = [.. taskSpecs.Select(t => KeyValuePair.Create(t.Name, t.Path))],
                Selection = new TaskSelection { MaxTrain = parse.GetValue(maxTrain), MaxEval = parse.GetValue(maxEval), Shuffle = !parse.GetValue(noShuffle), Seed = parse.GetValue(seed) },
                Targets = parse.GetValue(targets)!, Loading = ModelOptions.Loading(parse, dtype, device, fourBit), AdapterFolder = outDir,
                Lora = new LoraConfig
                {
                    R = parse.GetValue(rank), Alpha = parse.GetValue(alpha), Dropout = parse.GetValue(dropout), UseRsLora = parse.GetValue(rsLora),
                    TargetRegex = parse.GetValue(targetRegex), BaseModel = Path.GetFullPath(modelPath),
                },
                Training = new TrainOptions
                {
                    LearningRate = parse.GetValue(lr), WarmupRatio = parse.GetValue(warmup), MaxGradNorm = parse.GetValue(clip), Epochs = parse.GetValue(epochs),
                    MicroBatch = parse.GetValue(batch), GradientAccumulation = parse.GetValue(accumulation), MaxLength = parse.GetValue(maxLength),
                    AnswerOnlyLoss = parse.GetValue(answerOnly), Packing = !parse.GetValue(noPacking), Seed = parse.GetValue(seed), MaxSteps = parse.GetValue(maxSteps),
                    CheckpointDir = Path.Combine(outDir, "checkpoints"), Resume = parse.GetValue(resume),
                },
                Evaluate = !parse.GetValue(noEval), EvalBatch = parse.GetValue(evalBatch), LabelLikelihood = parse.GetValue(likelihood), GradientCheckpointing = parse.GetValue(checkpointing),
            };
            // Every number checked before any work (a NaN alpha once failed only after training, leaving checkpoints/).
            try
            {
                job.Lora.Validate();
                job.Training.Validate();
            }
            catch (ArgumentException e) { throw new UsageException("--" + e.Message); }
            using var cancel = new CancellationTokenSource();
            using var interrupt = Interrupts.CancelOnSignal(cancel);  // Ctrl-C: training keeps checkpoint-interrupted/ and exits 130
            var outcome = ProgressRenderer.Run(stderr, (progress, log) => TuneEngine.Run(job, progress, log, cancel.Token));
            var report = outcome.Report(modelPath);
            File.WriteAllText(Path.Combine(outDir, "metrics.json"), report.ToJsonString());
            stdout.WriteLine(outcome.TrainableSummary);
            stdout.Write(report.Table());
            return ExitCodes.Ok;
        }));
        return command;
    }
}
