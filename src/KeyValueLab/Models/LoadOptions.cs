using static TorchSharp.torch;

namespace KeyValueLab.Models;

/// <summary>How the weights of linear layers are kept in memory (compute is always fp32).</summary>
public enum WeightDType
{
    /// <summary>As the checkpoint stores them: BF16/F16 weights stay BF16/F16 and are widened per call; F32 stays F32.</summary>
    Stored,

    /// <summary>Widened to fp32 parameters up front (what every linear was before stored dtypes were kept).</summary>
    F32,

    /// <summary>Kept as BF16 (F32 checkpoints are rounded to nearest even once, at load).</summary>
    BF16,

    /// <summary>Kept as F16 (F32 checkpoints are rounded once, at load).</summary>
    F16,
}

/// <summary>Options of <see cref="ModelLoader.Load(string, LoadOptions?)"/>.</summary>
public sealed record LoadOptions
{
    /// <summary>How linear weights are kept; embeddings, norms, biases and <c>lm_head</c> (the unembedding reads it as a matrix) are always fp32.</summary>
    public WeightDType DType { get; init; } = WeightDType.Stored;

    /// <summary>
    /// Quantise every linear but <c>lm_head</c> to NF4 as it is read (QLoRA's 4-bit base); the model's
    /// <see cref="LoadedModel.FourBit"/> then holds them. <c>lm_head</c> stays fp32, as with transformers' <c>load_in_4bit</c>.
    /// </summary>
    public bool FourBit { get; init; }

    /// <summary>Where the parameters live (default: the CPU).</summary>
    public Device? Device { get; init; }

    /// <summary>
    /// The memory the loaded model may take, in bytes; null measures what is available (<see cref="AvailableMemory"/>).
    /// A model whose estimated resident size exceeds it is refused before anything is read.
    /// </summary>
    public long? MemoryLimit { get; init; }

    /// <summary>False skips the memory check.</summary>
    public bool CheckMemory { get; init; } = true;

    /// <summary>
    /// Where reading (and quantising) reports how far it has come: counter <c>load</c>, in MiB of the checkpoint's
    /// tensors read. Null: nowhere.
    /// </summary>
    public IProgress<WorkProgress>? Progress { get; init; }

    public static LoadOptions Default { get; } = new();
}
