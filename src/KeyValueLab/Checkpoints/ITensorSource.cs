using TorchSharp;

namespace KeyValueLab.Checkpoints;

/// <summary>Name, storage dtype (safetensors spelling: "F32", "F16", "BF16", …) and shape of one stored tensor.</summary>
public sealed record TensorInfo(string Name, string DType, long[] Shape);

/// <summary>
/// Read-only access to the tensors of a checkpoint, one at a time, so a model can be filled
/// without ever holding two full copies of the weights (shards are opened and released as needed).
/// Names are the Hugging Face state-dict names exactly as stored in the file.
/// </summary>
public interface ITensorSource : IDisposable
{
    /// <summary>The file or folder the tensors come from (used in error messages).</summary>
    string SourcePath { get; }

    /// <summary>Every stored tensor, in file order.</summary>
    IReadOnlyList<TensorInfo> Tensors { get; }

    /// <summary>Reads one tensor, widened to a new fp32 CPU tensor that the caller owns.</summary>
    torch.Tensor ReadFloat32(string name);

    /// <summary>
    /// Reads one tensor in its stored dtype (F32, F16 or BF16) as a CPU tensor the caller owns; safetensors files return a
    /// view of a memory map. Sources that hold only fp32 return <see cref="ReadFloat32"/>.
    /// </summary>
    torch.Tensor ReadStored(string name) => ReadFloat32(name);
}
