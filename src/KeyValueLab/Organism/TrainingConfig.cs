using System.Globalization;

namespace KeyValueLab.Organism;

/// <summary>
/// Pretraining hyperparameters: AdamW, linear warmup then cosine decay to <see cref="MinLearningRateRatio"/>·lr,
/// gradient-norm clipping, rows of <see cref="SequenceLength"/> tokens packed with whole documents.
/// </summary>
public sealed record TrainingConfig
{
    public int Epochs { get; init; } = 30;
    public int BatchSize { get; init; } = 32;
    public int SequenceLength { get; init; } = 64;
    public double LearningRate { get; init; } = 5e-3;
    public double MinLearningRateRatio { get; init; } = 0.05;
    public int WarmupSteps { get; init; } = 40;
    public double WeightDecay { get; init; } = 0.01;
    public double Beta1 { get; init; } = 0.9;
    public double Beta2 { get; init; } = 0.98;
    public double GradientClip { get; init; } = 1.0;

    /// <summary>Seed of the initial weights and of the order of documents; null = the world's seed.</summary>
    public long? Seed { get; init; }

    /// <summary>
    /// Torch intra-op threads during training. Results are bit-identical run to run for a fixed thread count
    /// on one machine (tested with 1 and 2); a different count may round differently, so the count is part of
    /// the cache key. Default 1: on a 2-core machine shared with other work, two OpenMP threads waiting on each
    /// other were several times slower than one, and one thread makes the weights independent of the core count.
    /// </summary>
    public int Threads { get; init; } = 1;

    /// <summary>Save a resumable checkpoint every this many steps (0 = only at the end).</summary>
    public int CheckpointEvery { get; init; } = 200;

    public void Validate()
    {
        if (Epochs < 1 || BatchSize < 1 || SequenceLength < 8 || LearningRate <= 0 || WarmupSteps < 0 || GradientClip <= 0 || Threads < 1 || CheckpointEvery < 0)
            throw new ArgumentException("training config out of range (epochs, batch ≥ 1; sequence ≥ 8; lr, clip > 0; threads ≥ 1)");
    }

    /// <summary>Learning rate at <paramref name="step"/> (0-based) of <paramref name="totalSteps"/>.</summary>
    public double LearningRateAt(int step, int totalSteps)
    {
        if (step < WarmupSteps) return LearningRate * (step + 1) / WarmupSteps;
        double progress = totalSteps <= WarmupSteps ? 1 : (double)(step - WarmupSteps) / (totalSteps - WarmupSteps);
        double min = LearningRate * MinLearningRateRatio;
        return min + (LearningRate - min) * 0.5 * (1 + Math.Cos(Math.PI * Math.Min(1, progress)));
    }

    /// <summary>A stable one-line description (everything but <see cref="CheckpointEvery"/>), part of the cache key.</summary>
    public string Key() => string.Create(CultureInfo.InvariantCulture,
        $"epochs{Epochs} b{BatchSize} T{SequenceLength} lr{LearningRate:R} min{MinLearningRateRatio:R} warm{WarmupSteps} wd{WeightDecay:R} betas{Beta1:R},{Beta2:R} clip{GradientClip:R} seed{Seed} threads{Threads}");
}
