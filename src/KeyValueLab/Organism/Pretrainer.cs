using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using KeyValueLab.Checkpoints;
using KeyValueLab.Models;
using KeyValueLab.Tuning;
using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Organism;

/// <summary>One progress report of <see cref="Pretrainer.Train"/> (after each step).</summary>
public sealed record TrainingProgress(int Step, int TotalSteps, double Loss, double LearningRate, double TokensPerSecond, TimeSpan Elapsed, TimeSpan Eta);

/// <summary>What a training run did.</summary>
public sealed record TrainingResult(int Steps, int ResumedFromStep, long Tokens, double FinalLoss, TimeSpan Elapsed);

/// <summary>
/// Causal-LM pretraining from scratch (next-token cross-entropy on every real token): AdamW, linear warmup then
/// cosine decay, gradient-norm clipping. Documents are packed whole into rows of <c>SequenceLength + 1</c> tokens
/// (inputs and shifted targets), so every row starts at a document boundary, as prompts do at evaluation; the
/// rest of a row is padding that the loss ignores. Each epoch shuffles the documents with a seeded generator,
/// so a run is a pure function of (documents, model, config): with the same thread count it is bit-identical,
/// and resuming from a checkpoint gives the same weights as not stopping.
/// </summary>
public static class Pretrainer
{
    private const long Ignore = -100;

    /// <summary>The rows of one epoch: each <c>rowLength</c> ids, documents whole (split only when longer than a row), padded with <paramref name="padId"/>.</summary>
    public static List<int[]> PackRows(IReadOnlyList<int[]> documents, int[] order, int rowLength, int padId, out List<int> realLengths)
    {
        var rows = new List<int[]>();
        realLengths = [];
        var row = new List<int>(rowLength);
        void Flush(List<int> lengths)
        {
            if (row.Count == 0) return;
            lengths.Add(row.Count);
            while (row.Count < rowLength) row.Add(padId);
            rows.Add([.. row]);
            row.Clear();
        }
        foreach (int d in order)
        {
            var doc = documents[d];
            if (row.Count + doc.Length > rowLength) Flush(realLengths);
            for (int i = 0; i < doc.Length; i += rowLength)
            {
                var piece = doc.AsSpan(i, Math.Min(rowLength, doc.Length - i));
                if (row.Count + piece.Length > rowLength) Flush(realLengths);
                row.AddRange(piece.ToArray());
            }
        }
        Flush(realLengths);
        return rows;
    }

    /// <summary>The batches of every epoch, in training order: (ids [B, rowLength], real lengths).</summary>
    public static List<(int[][] Rows, int[] Lengths)> Batches(IReadOnlyList<int[]> documents, TrainingConfig config, long seed, int padId)
    {
        var batches = new List<(int[][], int[])>();
        for (int epoch = 0; epoch < config.Epochs; epoch++)
        {
            int[] order = WorldRandom.For(seed, $"epoch-{epoch}").Permutation(documents.Count);
            var rows = PackRows(documents, order, config.SequenceLength + 1, padId, out var lengths);
            for (int i = 0; i < rows.Count; i += config.BatchSize)
            {
                int n = Math.Min(config.BatchSize, rows.Count - i);
                batches.Add((rows.GetRange(i, n).ToArray(), lengths.GetRange(i, n).ToArray()));
            }
        }
        return batches;
    }

    /// <summary>
    /// Trains <paramref name="loaded"/> in place. With <paramref name="checkpointFolder"/>, saves resumable checkpoints
    /// there (weights, optimizer state, step) and first resumes from the newest one found.
    /// </summary>
    public static TrainingResult Train(LoadedModel loaded, IReadOnlyList<int[]> documents, TrainingConfig config, long seed, int padId,
        string? checkpointFolder = null, Action<TrainingProgress>? onProgress = null, CancellationToken cancel = default)
    {
        ArgumentNullException.ThrowIfNull(loaded);
        ArgumentNullException.ThrowIfNull(documents);
        config.Validate();
        var model = loaded.Model;
        var batches = Batches(documents, config, seed, padId);
        int total = batches.Count, vocab = model.Config.VocabSize;
        var parameters = model.parameters().ToList();

        int previousThreads = torch.get_num_threads();
        torch.set_num_threads(config.Threads);
        // Our AdamW and clipping (same arithmetic as TorchSharp's) make no temporary Scalars per step (see HeldScalars).
        using var optimizer = new AdamWOptimizer(parameters, config.LearningRate, config.Beta1, config.Beta2, 1e-8, config.WeightDecay);
        try
        {
            int start = checkpointFolder is null ? 0 : Resume(loaded, optimizer, checkpointFolder);
            model.train();
            var clock = Stopwatch.StartNew();
            long tokens = 0;
            double loss = double.NaN;
            for (int step = start; step < total; step++)
            {
                cancel.ThrowIfCancellationRequested();
                using var scope = NewDisposeScope();
                var (rows, lengths) = batches[step];
                int b = rows.Length, t = config.SequenceLength;
                var inputs = new long[b * t];
                var targets = new long[b * t];
                for (int r = 0; r < b; r++)
                    for (int j = 0; j < t; j++)
                    {
                        inputs[r * t + j] = rows[r][j];
                        targets[r * t + j] = j + 1 < lengths[r] ? rows[r][j + 1] : Ignore;
                    }
                double lr = config.LearningRateAt(step, total);
                optimizer.LearningRate = lr;

                var logits = model.Forward(tensor(inputs, [b, t]));                                   // [B, T, V]
                var lossTensor = nn.functional.cross_entropy(logits.view(-1, vocab), tensor(targets), ignore_index: Ignore);
                optimizer.ZeroGrad();
                lossTensor.backward();
                GradientClipping.ClipGradNorm(parameters, config.GradientClip);
                optimizer.Step();
                loss = lossTensor.item<float>();
                tokens += lengths.Sum(l => l - 1);

                int done = step + 1;
                if (checkpointFolder is not null && config.CheckpointEvery > 0 && done % config.CheckpointEvery == 0 && done < total)
                    SaveCheckpoint(loaded, optimizer, checkpointFolder, done, loss);
                if (onProgress is not null)
                {
                    double seconds = clock.Elapsed.TotalSeconds;
                    double perStep = seconds / (done - start);
                    onProgress(new TrainingProgress(done, total, loss, lr, tokens / Math.Max(seconds, 1e-9), clock.Elapsed, TimeSpan.FromSeconds(perStep * (total - done))));
                }
            }
            model.eval();
            return new TrainingResult(total, start, tokens, loss, clock.Elapsed);
        }
        finally
        {
            torch.set_num_threads(previousThreads);
        }
    }

    // ---- checkpoints: <folder>/step-NNNNNN/{config.json, model.safetensors, optimizer.safetensors, state.json}; "latest" names the newest complete one ----
    // (checkpoints written before hold TorchSharp's optimizer.bin instead, which Resume still reads)

    private const string OptimizerFile = "optimizer.safetensors", LegacyOptimizerFile = "optimizer.bin";

    private static void SaveCheckpoint(LoadedModel loaded, AdamWOptimizer optimizer, string folder, int step, double loss)
    {
        string name = $"step-{step:D6}";
        string dir = Path.Combine(folder, name);
        if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        loaded.Save(dir);
        optimizer.Save(Path.Combine(dir, OptimizerFile));
        var state = new JsonObject { ["step"] = step, ["loss"] = double.IsFinite(loss) ? loss : null };
        File.WriteAllText(Path.Combine(dir, "state.json"), state.ToJsonString());
        string latest = Path.Combine(folder, "latest");
        File.WriteAllText(latest + ".tmp", name);
        File.Move(latest + ".tmp", latest, overwrite: true);
        foreach (var old in Directory.EnumerateDirectories(folder, "step-*").Where(d => Path.GetFileName(d) != name))
            Directory.Delete(old, recursive: true);
    }

    /// <summary>Restores weights and optimizer state from the newest checkpoint; returns its step (0 when there is none).</summary>
    private static int Resume(LoadedModel loaded, AdamWOptimizer optimizer, string folder)
    {
        string latest = Path.Combine(folder, "latest");
        if (!File.Exists(latest)) return 0;
        string dir = Path.Combine(folder, File.ReadAllText(latest).Trim());
        string statePath = Path.Combine(dir, "state.json");
        if (!File.Exists(statePath)) return 0;
        var state = JsonNode.Parse(File.ReadAllText(statePath)) as JsonObject
            ?? throw new InputException(statePath, "expected a JSON object");
        int step = state["step"]?.GetValue<int>() ?? throw new InputException(statePath, "no \"step\"");
        using (var checkpoint = HfCheckpoint.Open(dir)) ModelLoader.Fill(loaded.Model, checkpoint);
        optimizer.Load(Path.Combine(dir, OptimizerFile), legacyPath: Path.Combine(dir, LegacyOptimizerFile));
        return step;
    }

    internal static string Describe(TrainingProgress p) => string.Create(CultureInfo.InvariantCulture,
        $"step {p.Step}/{p.TotalSteps} loss {p.Loss:F4} lr {p.LearningRate:E2} {p.TokensPerSecond:F0} tok/s elapsed {p.Elapsed:mm\\:ss} ETA {p.Eta:mm\\:ss}");
}
