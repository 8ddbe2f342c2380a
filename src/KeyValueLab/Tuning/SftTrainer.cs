using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using KeyValueLab.Inference;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Tuning;

/// <summary>
/// Supervised fine-tuning settings with the paper's defaults (TRL SFTTrainer + transformers Trainer): AdamW lr 2e-4, constant
/// after a 3% linear warmup, max grad norm 0.3, 5 epochs, effective batch 64 = 32 × 2 accumulation, packing to 512 tokens.
/// (The paper used paged AdamW 32-bit on a GPU; on CPU plain AdamW with fp32 states is the same update.)
/// </summary>
public sealed record TrainOptions
{
    public double LearningRate { get; init; } = 2e-4;
    public double WarmupRatio { get; init; } = 0.03;
    public double MaxGradNorm { get; init; } = 0.3;
    public double WeightDecay { get; init; }
    public int Epochs { get; init; } = 5;
    public int MicroBatch { get; init; } = 32;
    public int GradientAccumulation { get; init; } = 2;
    public int MaxLength { get; init; } = 512;

    /// <summary>Count the loss on the label tokens (and the EOS after them) only; the paper trained on every token.</summary>
    public bool AnswerOnlyLoss { get; init; }

    /// <summary>
    /// Concatenate the examples and cut them into rows of <see cref="MaxLength"/> (the paper's TRL packing: an example sees
    /// the ones before it in its row, and one in each row is cut in two). False: one example a row, right-padded, as the
    /// evaluator sees it (alone, from position 0).
    /// </summary>
    public bool Packing { get; init; } = true;
    public int Seed { get; init; } = 42;

    /// <summary>Stop after this many optimizer steps in all (0 = no limit); for smoke tests.</summary>
    public int MaxSteps { get; init; }

    /// <summary>Where to write <c>checkpoint-epoch-N/</c> after every epoch (adapter + optimizer + trainer_state.json); null = none.</summary>
    public string? CheckpointDir { get; init; }

    /// <summary>Continue from the last complete epoch checkpoint in <see cref="CheckpointDir"/>.</summary>
    public bool Resume { get; init; }

    /// <summary>Throws <see cref="ArgumentException"/> naming the first setting that is not finite or out of its range (by its
    /// <c>kvlab tune</c> option's name without the dashes), checked before any work.</summary>
    public void Validate()
    {
        // Written so that NaN fails every check: a comparison with NaN is false.
        if (!(double.IsFinite(LearningRate) && LearningRate > 0)) throw new ArgumentException($"lr {LearningRate} must be a finite number > 0");
        if (!(WarmupRatio >= 0 && WarmupRatio <= 1)) throw new ArgumentException($"warmup-ratio {WarmupRatio} must be in [0, 1]");
        if (!(double.IsFinite(MaxGradNorm) && MaxGradNorm > 0)) throw new ArgumentException($"max-grad-norm {MaxGradNorm} must be a finite number > 0");
        if (!(double.IsFinite(WeightDecay) && WeightDecay >= 0)) throw new ArgumentException($"weight-decay {WeightDecay} must be a finite number >= 0");
        if (Epochs < 1) throw new ArgumentException($"epochs {Epochs} must be >= 1");
        if (MicroBatch < 1) throw new ArgumentException($"batch {MicroBatch} must be >= 1");
        if (GradientAccumulation < 1) throw new ArgumentException($"grad-accum {GradientAccumulation} must be >= 1");
        if (MaxLength < 2) throw new ArgumentException($"max-length {MaxLength} must be >= 2");
        if (MaxSteps < 0) throw new ArgumentException($"max-steps {MaxSteps} must be >= 0 (0 = no limit)");
    }
}

/// <summary>Fixed-length training rows: ids <c>[rows, L]</c>, labels (−100 = no loss) and how many positions are real.</summary>
public sealed record PackedData(long[][] Ids, long[][] Labels, int[] Lengths, long Tokens)
{
    public int Rows => Ids.Length;
}

/// <summary>What a training run did.</summary>
public sealed record TrainResult(int Steps, int Epochs, IReadOnlyList<double> EpochLosses, double TokensPerSecond, double Seconds);

/// <summary>
/// Causal-LM SFT of the adapters of a <see cref="LoraModel"/>: every example becomes <c>[BOS] prompt+label EOS</c>, the examples
/// are concatenated and cut into rows of <see cref="TrainOptions.MaxLength"/> (packing, as TRL's ConstantLengthDataset: attention
/// crosses example boundaries), rows are shuffled per epoch with a seed, and AdamW steps the adapter parameters.
/// </summary>
public static class SftTrainer
{
    public const long IgnoreIndex = -100;

    /// <summary>Tokenises and packs <paramref name="examples"/>; the last, shorter row is padded (and ignored by the loss).</summary>
    public static PackedData Pack(CausalLM model, ITokenizer tokenizer, IEnumerable<TaskExample> examples, int maxLength, bool answerOnly)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxLength, 2);
        int eos = tokenizer.EosId ?? throw new ArgumentException("the tokenizer has no EOS token to end each example with");
        var ids = new List<long>();
        var counted = new List<bool>();
        foreach (var example in examples)
        {
            var full = PromptEncoding.Encode(model, tokenizer, example.TrainingText);
            int answerStart = answerOnly ? AnswerStart(model, tokenizer, example, full) : 0;
            for (int i = 0; i < full.Length; i++) { ids.Add(full[i]); counted.Add(i >= answerStart); }
            ids.Add(eos);
            counted.Add(true);
        }
        int rows = (ids.Count + maxLength - 1) / maxLength;
        var rowIds = new long[rows][];
        var rowLabels = new long[rows][];
        var lengths = new int[rows];
        for (int r = 0; r < rows; r++)
        {
            int start = r * maxLength, len = Math.Min(maxLength, ids.Count - start);
            rowIds[r] = new long[maxLength];
            rowLabels[r] = new long[maxLength];
            Array.Fill(rowIds[r], eos);
            Array.Fill(rowLabels[r], IgnoreIndex);
            for (int i = 0; i < len; i++)
            {
                rowIds[r][i] = ids[start + i];
                if (counted[start + i]) rowLabels[r][i] = ids[start + i];
            }
            lengths[r] = len;
        }
        return new PackedData(rowIds, rowLabels, lengths, ids.Count);
    }

    /// <summary>
    /// One example a row (<c>[BOS] prompt+label EOS</c>, its last <paramref name="maxLength"/> tokens when longer), padded to
    /// <paramref name="maxLength"/> after its end; the loss and attention ignore the padding.
    /// </summary>
    public static PackedData OnePerRow(CausalLM model, ITokenizer tokenizer, IEnumerable<TaskExample> examples, int maxLength, bool answerOnly)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxLength, 2);
        int eos = tokenizer.EosId ?? throw new ArgumentException("the tokenizer has no EOS token to end each example with");
        var rowIds = new List<long[]>();
        var rowLabels = new List<long[]>();
        var lengths = new List<int>();
        long tokens = 0;
        foreach (var example in examples)
        {
            var full = PromptEncoding.Encode(model, tokenizer, example.TrainingText);
            int answerStart = answerOnly ? AnswerStart(model, tokenizer, example, full) : 0;
            int total = full.Length + 1, drop = Math.Max(0, total - maxLength), len = total - drop;
            var ids = new long[maxLength];
            var labels = new long[maxLength];
            Array.Fill(ids, eos);
            Array.Fill(labels, IgnoreIndex);
            for (int i = drop; i < total; i++)
            {
                long id = i < full.Length ? full[i] : eos;
                ids[i - drop] = id;
                if (i >= answerStart) labels[i - drop] = id;
            }
            rowIds.Add(ids);
            rowLabels.Add(labels);
            lengths.Add(len);
            tokens += total;
        }
        return new PackedData([.. rowIds], [.. rowLabels], [.. lengths], tokens);
    }

    /// <summary>Index of the first label token in the ids of prompt+label: where they stop agreeing with the prompt's own ids.</summary>
    internal static int AnswerStart(CausalLM model, ITokenizer tokenizer, TaskExample example, int[] full)
    {
        var prompt = PromptEncoding.Encode(model, tokenizer, example.Prompt);
        int common = 0;
        while (common < prompt.Length && common < full.Length && prompt[common] == full[common]) common++;
        return Math.Min(common, Math.Max(0, full.Length - 1));
    }

    /// <summary>
    /// Trains the adapters of <paramref name="lora"/> on <paramref name="examples"/>; reports every optimizer step (loss, learning
    /// rate, tokens/s) to <paramref name="progress"/>, a line per epoch to <paramref name="log"/>, and writes a checkpoint after every
    /// epoch when <see cref="TrainOptions.CheckpointDir"/> is set. <paramref name="cancel"/> is checked between steps; when it
    /// fires, the steps done so far are kept in <c>checkpoint-interrupted/</c> (with the dropout generator's state), from which
    /// <see cref="TrainOptions.Resume"/> continues mid-epoch as if nothing had happened.
    /// </summary>
    public static TrainResult Train(LoraModel lora, ITokenizer tokenizer, IReadOnlyList<TaskExample> examples, TrainOptions options,
        IProgress<WorkProgress>? progress = null, Action<string>? log = null, CancellationToken cancel = default)
    {
        var model = lora.Model;
        var data = options.Packing
            ? Pack(model, tokenizer, examples, options.MaxLength, options.AnswerOnlyLoss)
            : OnePerRow(model, tokenizer, examples, options.MaxLength, options.AnswerOnlyLoss);
        int perStep = options.MicroBatch * options.GradientAccumulation;
        int stepsPerEpoch = (data.Rows + perStep - 1) / perStep;
        int totalSteps = stepsPerEpoch * options.Epochs;
        if (options.MaxSteps > 0) totalSteps = Math.Min(totalSteps, options.MaxSteps);
        int warmup = (int)Math.Ceiling(options.WarmupRatio * totalSteps);

        var parameters = lora.Parameters();
        using var optimizer = new AdamWOptimizer(parameters, options.LearningRate, weightDecay: options.WeightDecay);
        int startEpoch = 0, step = 0, startStepInEpoch = 0, resumedLossCount = 0;
        double resumedLossSum = 0;
        byte[]? dropoutState = null;
        var epochLosses = new List<double>();
        if (options.Resume && options.CheckpointDir is not null && LastCheckpoint(options.CheckpointDir) is (string dir, int doneEpochs))
        {
            lora.LoadWeights(Path.Combine(dir, LoraModel.WeightsFile));
            optimizer.Load(Path.Combine(dir, OptimizerFile), legacyPath: Path.Combine(dir, LegacyOptimizerFile));
            var state = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "trainer_state.json")))!.AsObject();
            step = (int)state["global_step"]!;
            epochLosses.AddRange(state["epoch_losses"]!.AsArray().Select(n => (double)n!));
            startEpoch = doneEpochs;
            log?.Invoke($"resuming after epoch {doneEpochs} (step {step}) from {dir}");
        }
        string? interrupted = options.CheckpointDir is null ? null : Path.Combine(options.CheckpointDir, InterruptedName);
        if (options.Resume && interrupted is not null && File.Exists(Path.Combine(interrupted, "trainer_state.json")))
        {
            var state = JsonNode.Parse(File.ReadAllText(Path.Combine(interrupted, "trainer_state.json")))!.AsObject();
            if ((int)state["global_step"]! > step)
            {
                lora.LoadWeights(Path.Combine(interrupted, LoraModel.WeightsFile));
                optimizer.Load(Path.Combine(interrupted, OptimizerFile), legacyPath: Path.Combine(interrupted, LegacyOptimizerFile));
                step = (int)state["global_step"]!;
                epochLosses.Clear();
                epochLosses.AddRange(state["epoch_losses"]!.AsArray().Select(n => (double)n!));
                startEpoch = (int)state["epoch"]!;
                startStepInEpoch = (int)state["step_in_epoch"]!;
                resumedLossSum = (double)state["loss_sum"]!;
                resumedLossCount = (int)state["loss_count"]!;
                dropoutState = File.ReadAllBytes(Path.Combine(interrupted, DropoutStateFile));
                log?.Invoke($"resuming interrupted epoch {startEpoch + 1} at step {step} from {interrupted}");
            }
        }
        int stepsBefore = step;

        lora.Training = true;
        var clock = Stopwatch.StartNew();
        long tokensSeen = 0;
        for (int epoch = startEpoch; epoch < options.Epochs && (options.MaxSteps <= 0 || step < totalSteps); epoch++)
        {
            lora.DropoutGenerator?.Dispose();
            lora.DropoutGenerator = new torch.Generator((ulong)(options.Seed + epoch));  // seeded per epoch: a resumed run continues identically
            bool midEpoch = epoch == startEpoch && startStepInEpoch > 0;
            if (midEpoch && dropoutState is not null)
            {
                using var saved = tensor(dropoutState, dtype: ScalarType.Byte);
                lora.DropoutGenerator.set_state(saved);
            }
            var order = TaskLoader.Permutation(data.Rows, options.Seed + epoch);
            double lossSum = midEpoch ? resumedLossSum : 0;
            int lossCount = midEpoch ? resumedLossCount : 0;
            for (int s = midEpoch ? startStepInEpoch : 0; s < stepsPerEpoch && (options.MaxSteps <= 0 || step < totalSteps); s++)
            {
                if (cancel.IsCancellationRequested)
                {
                    // Keep what this run trained: the next run resumes at this very step.
                    if (interrupted is not null && step > stepsBefore)
                        SaveInterrupted(lora, optimizer, interrupted, epoch, s, step, epochLosses, lossSum, lossCount);
                    cancel.ThrowIfCancellationRequested();
                }
                double lr = options.LearningRate * (step < warmup ? (double)step / Math.Max(1, warmup) : 1.0);
                optimizer.LearningRate = lr;
                optimizer.ZeroGrad();
                var rows = order.Skip(s * perStep).Take(perStep).ToArray();
                var micro = rows.Chunk(options.MicroBatch).ToArray();
                double stepLoss = 0;
                using Scalar microBatches = micro.Length;  // held for the whole step: no temporary Scalar (see HeldScalars)
                foreach (var batch in micro)
                {
                    using var scope = NewDisposeScope();
                    var loss = BatchLoss(model, data, batch);
                    loss.div(microBatches).backward();
                    stepLoss += loss.item<float>() / micro.Length;
                    tokensSeen += batch.Sum(r => (long)data.Lengths[r]);
                }
                GradientClipping.ClipGradNorm(parameters, options.MaxGradNorm);
                optimizer.Step();
                step++;
                lossSum += stepLoss;
                lossCount++;
                progress?.Report(new WorkProgress("train", step, totalSteps, $"epoch {epoch + 1}/{options.Epochs}")
                {
                    Loss = stepLoss, LearningRate = lr, TokensPerSecond = tokensSeen / clock.Elapsed.TotalSeconds,
                });
            }
            epochLosses.Add(lossCount > 0 ? lossSum / lossCount : double.NaN);
            log?.Invoke(string.Create(CultureInfo.InvariantCulture,
                $"epoch {epoch + 1}/{options.Epochs}: step {step}/{totalSteps}, mean loss {epochLosses[^1]:F4}, {tokensSeen / clock.Elapsed.TotalSeconds:F0} tok/s"));
            if (options.CheckpointDir is not null)
            {
                SaveCheckpoint(lora, optimizer, options.CheckpointDir, epoch + 1, step, epochLosses);
                if (Directory.Exists(interrupted)) Directory.Delete(interrupted, recursive: true);  // older than this epoch's checkpoint
            }
        }
        lora.Training = false;
        double seconds = clock.Elapsed.TotalSeconds;
        return new TrainResult(step, options.Epochs, epochLosses, seconds > 0 ? tokensSeen / seconds : 0, seconds);
    }

    /// <summary>Mean next-token cross-entropy over the counted positions of some packed rows.</summary>
    internal static Tensor BatchLoss(CausalLM model, PackedData data, int[] rows)
    {
        int width = rows.Max(r => data.Lengths[r]);
        var ids = tensor(rows.SelectMany(r => data.Ids[r].Take(width)).ToArray(), [rows.Length, width]);
        var labels = tensor(rows.SelectMany(r => data.Labels[r].Take(width)).ToArray(), [rows.Length, width]);
        Tensor? mask = rows.Any(r => data.Lengths[r] < width)
            ? tensor(rows.SelectMany(r => Enumerable.Range(0, width).Select(i => i < data.Lengths[r] ? 1L : 0L)).ToArray(), [rows.Length, width])
            : null;
        var logits = model.Forward(ids, mask);  // [B, T, V]
        var shifted = logits[.., ..^1].reshape(-1, logits.shape[2]);
        return nn.functional.cross_entropy(shifted, labels[.., 1..].reshape(-1), ignore_index: IgnoreIndex);
    }

    /// <summary>AdamW state of a checkpoint: <c>optimizer.safetensors</c>, or TorchSharp's <c>optimizer.bin</c> in checkpoints written before.</summary>
    private const string OptimizerFile = "optimizer.safetensors", LegacyOptimizerFile = "optimizer.bin";

    /// <summary>The checkpoint an interrupted run leaves mid-epoch, and the dropout generator's state inside it.</summary>
    public const string InterruptedName = "checkpoint-interrupted";
    private const string DropoutStateFile = "dropout_generator.bin";

    private static void SaveCheckpoint(LoraModel lora, AdamWOptimizer optimizer, string root, int epoch, int step, List<double> losses) =>
        Save(lora, optimizer, Path.Combine(root, $"checkpoint-epoch-{epoch}"), new JsonObject
        {
            ["epoch"] = epoch,
            ["global_step"] = step,
            ["epoch_losses"] = Losses(losses),
        });

    /// <summary>Mid-epoch state: <paramref name="epoch"/> is 0-based and <paramref name="stepInEpoch"/> the next step to run in it.</summary>
    private static void SaveInterrupted(LoraModel lora, AdamWOptimizer optimizer, string dir, int epoch, int stepInEpoch, int step,
        List<double> losses, double lossSum, int lossCount) =>
        Save(lora, optimizer, dir, new JsonObject
        {
            ["epoch"] = epoch,
            ["step_in_epoch"] = stepInEpoch,
            ["global_step"] = step,
            ["epoch_losses"] = Losses(losses),
            ["loss_sum"] = lossSum,
            ["loss_count"] = lossCount,
        }, tmp =>
        {
            using var state = lora.DropoutGenerator!.get_state();
            File.WriteAllBytes(Path.Combine(tmp, DropoutStateFile), state.data<byte>().ToArray());
        });

    private static JsonArray Losses(List<double> losses) => new([.. losses.Select(l => (JsonNode?)JsonValue.Create(l))]);

    private static void Save(LoraModel lora, AdamWOptimizer optimizer, string dir, JsonObject state, Action<string>? more = null)
    {
        string tmp = dir + ".partial";
        if (Directory.Exists(tmp)) Directory.Delete(tmp, true);
        lora.Save(tmp);
        optimizer.Save(Path.Combine(tmp, OptimizerFile));
        more?.Invoke(tmp);
        File.WriteAllText(Path.Combine(tmp, "trainer_state.json"), state.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        if (Directory.Exists(dir)) Directory.Delete(dir, true);
        Directory.Move(tmp, dir);  // a checkpoint folder exists only when complete
    }

    /// <summary>The complete checkpoint with the highest epoch under <paramref name="root"/>, or null.</summary>
    public static (string Dir, int Epoch)? LastCheckpoint(string root)
    {
        if (!Directory.Exists(root)) return null;
        return Directory.GetDirectories(root, "checkpoint-epoch-*")
            .Select(d => (Dir: d, Ok: int.TryParse(Path.GetFileName(d)["checkpoint-epoch-".Length..], out int e), Epoch: e))
            .Where(c => c.Ok && File.Exists(Path.Combine(c.Dir, "trainer_state.json")))
            .OrderByDescending(c => c.Epoch)
            .Select(c => ((string, int)?)(c.Dir, c.Epoch))
            .FirstOrDefault();
    }
}
